"""spacy-angel: generative biomedical entity linking for spaCy (ANGEL method)."""
from spacy_angel.types import Candidate, Mention

__version__ = "0.1.0"

__all__ = ["Candidate", "Mention", "__version__"]
