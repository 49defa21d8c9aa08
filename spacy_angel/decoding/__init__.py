"""Running the model: trie-constrained beam search, padding and positions, prefix-tree scoring."""
