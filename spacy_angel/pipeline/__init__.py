"""The spaCy components (angel_linker, angel_abbreviations), their registrations and config checks."""
