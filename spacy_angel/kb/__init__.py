"""The knowledge base: the KB store, one reader per source format, id and name normalisation."""
