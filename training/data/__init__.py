"""Corpora and KBs for training: readers -> Mention records, preprocessing, KB subsets and held-out names."""
