"""Training examples in the linker's decoding format: seq2seq rows, preference pairs, KB pre-training data."""
