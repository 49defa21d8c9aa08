"""The seq2seq model: loading (device, dtype, int8), offline init, and the prompt format."""
