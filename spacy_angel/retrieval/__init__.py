"""Candidate retrieval over KB names without a model (char 3-gram TF-IDF), saved beside the KB."""
