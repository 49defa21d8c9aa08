"""The token trie of KB names (NumPy CSR arrays) and its fit to a KB and a tokenizer."""
