"""A dense name encoder learned from the KB's own synonym sets: names of one concept close, others apart.

Why: on names it never read, the generative model adds little to the char 3-gram TF-IDF lookup
(issue 26: HPO held-out synonyms 31.6 beam vs 36.8 TF-IDF). The KB itself says how its names vary:
"kidney"/"renal", "absent X"/"X aplasia", "1st long bone of hand"/"1st metacarpal" recur across
thousands of concepts. SapBERT learns that by self-alignment from a pre-trained BERT; without one
(offline, 2 CPU cores), this encoder is a linear map of a name's sparse n-gram features: char
2-4-grams inside words plus whole words, TF-IDF weighted and L2-normalised (scikit-learn), times a
learned ``features x dim`` projection, L2-normalised again, so a dot product is a cosine. It is
trained contrastively by ``training.stages.name_encoder`` and here only applied (numpy/SciPy, no torch).

Persistence, no pickle: ``encoder.safetensors`` (both idf vectors and the projection, mappable) and
``encoder.json`` (settings and both vocabularies) in ``MODEL/name_encoder/``, beside the model it fuses with.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from spacy_angel.errors import Errors, NameIndexError
from spacy_angel.fileio import atomic_write_text
from spacy_angel.kb.normalize import normalize_name
from spacy_angel.mapped_arrays import read_arrays, write_arrays

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

ENCODER_DIR = "name_encoder"
ENCODER_ARRAYS = "encoder.safetensors"
ENCODER_CONFIG = "encoder.json"
_FORMAT = "spacy_angel.name_encoder"
_FORMAT_VERSION = 1
CHAR_NGRAMS: Tuple[int, int] = (2, 4)
WORD_PATTERN = r"(?u)\b\w+\b"  # one-letter words count ("type 1", "vitamin d")


def _vectorizer(analyzer: str, vocabulary: Any = None) -> "TfidfVectorizer":
    from sklearn.feature_extraction.text import TfidfVectorizer

    if analyzer == "word":
        return TfidfVectorizer(analyzer="word", token_pattern=WORD_PATTERN, sublinear_tf=True, dtype=np.float32,
                               vocabulary=vocabulary)
    return TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, sublinear_tf=True, dtype=np.float32,
                           vocabulary=vocabulary)


@dataclass
class NameFeatures:
    """The sparse input of the encoder: char 2-4-gram and word TF-IDF, side by side, L2-normalised."""

    char: "TfidfVectorizer"
    word: "TfidfVectorizer"

    @classmethod
    def fit(cls, names: Sequence[str]) -> "NameFeatures":
        """Vocabularies and idf from the KB names (n-grams no name has are ignored at query time)."""
        if not len(names):
            raise ValueError(Errors.E450)
        char, word = _vectorizer("char"), _vectorizer("word")
        char.fit(names)
        word.fit(names)
        return cls(char, word)

    @property
    def size(self) -> int:
        return len(self.char.vocabulary_) + len(self.word.vocabulary_)

    def transform(self, texts: Sequence[str], normalized: bool = False) -> "sp.csr_matrix":
        """One L2-normalised sparse row per text (``normalized``: texts are already KB-normalised names)."""
        import scipy.sparse as sp

        texts = list(texts) if normalized else [normalize_name(t) for t in texts]
        rows = sp.hstack([self.char.transform(texts), self.word.transform(texts)], format="csr", dtype=np.float32)
        norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1), dtype=np.float64)).ravel()
        return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ rows, dtype=np.float32)


class NameEncoder:
    """``encode(texts) -> (n, dim)`` unit vectors: sparse n-gram features times a learned projection."""

    def __init__(self, features: NameFeatures, projection: np.ndarray, meta: Optional[Dict[str, Any]] = None) -> None:
        if projection.ndim != 2 or projection.shape[0] != features.size:
            raise ValueError(Errors.E451.format(shape=projection.shape, features=features.size))
        self.features = features
        self.projection = projection
        self.meta = dict(meta or {})

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    def encode(self, texts: Sequence[str], *, normalized: bool = False, batch_size: int = 8192) -> np.ndarray:
        """Unit vectors, float32, in batches (a 6M-name KB never holds all sparse rows at once)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            block = np.asarray(self.features.transform(texts[start : start + batch_size], normalized) @ self.projection)
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            out[start : start + len(block)] = block / np.maximum(norms, 1e-12)
        return out

    def to_disk(self, directory: Union[str, Path]) -> Path:
        """``directory/encoder.safetensors`` then ``encoder.json`` (one build id in both: a crash between
        the two writes reads as a broken encoder, never as another one's parts)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        build_id = secrets.token_hex(8)
        arrays = {"char_idf": np.asarray(self.features.char.idf_, np.float64),
                  "word_idf": np.asarray(self.features.word.idf_, np.float64),
                  "projection": np.ascontiguousarray(self.projection, np.float32)}
        write_arrays(d / ENCODER_ARRAYS, arrays, {"format": _FORMAT, "build_id": build_id})
        config = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "build_id": build_id, "dim": self.dim,
                  "char_ngrams": list(CHAR_NGRAMS), "meta": self.meta,
                  "char_vocabulary": _terms(self.features.char), "word_vocabulary": _terms(self.features.word)}
        atomic_write_text(d / ENCODER_CONFIG, json.dumps(config, ensure_ascii=False))
        return d

    @classmethod
    def from_disk(cls, directory: Union[str, Path], *, mmap: bool = True) -> "NameEncoder":
        """The encoder saved in ``directory``; :class:`NameIndexError` naming it when it cannot be used."""
        d = Path(directory)
        try:
            config = json.loads((d / ENCODER_CONFIG).read_text(encoding="utf-8"))
            if config.get("format") != _FORMAT or config.get("format_version") != _FORMAT_VERSION:
                raise ValueError(Errors.E452.format(format=_FORMAT, version=_FORMAT_VERSION))
            if tuple(config.get("char_ngrams", ())) != CHAR_NGRAMS:
                raise ValueError(Errors.E453.format(ngrams=config.get("char_ngrams"), wanted=list(CHAR_NGRAMS)))
            arrays, meta = read_arrays(d / ENCODER_ARRAYS, mmap=mmap)
            if meta.get("build_id") != config.get("build_id"):
                raise ValueError(Errors.E454)
            char = _vectorizer("char", {t: i for i, t in enumerate(config["char_vocabulary"])})
            word = _vectorizer("word", {t: i for i, t in enumerate(config["word_vocabulary"])})
            if len(arrays["char_idf"]) != len(char.vocabulary) or len(arrays["word_idf"]) != len(word.vocabulary):
                raise ValueError(Errors.E455)
            char.idf_, word.idf_ = np.asarray(arrays["char_idf"]), np.asarray(arrays["word_idf"])
            return cls(NameFeatures(char, word), arrays["projection"], config.get("meta") or {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise NameIndexError(Errors.E456.format(path=d, err=err)) from err


def _terms(vectorizer: "TfidfVectorizer") -> List[str]:
    terms = [""] * len(vectorizer.vocabulary_)
    for term, col in vectorizer.vocabulary_.items():
        terms[int(col)] = str(term)
    return terms


def load_name_encoder(model_dir: Union[str, Path, None]) -> Optional[NameEncoder]:
    """``MODEL/name_encoder`` when the model directory has one (a hub id or a model without: None)."""
    if model_dir is None or not (Path(str(model_dir)) / ENCODER_DIR / ENCODER_CONFIG).is_file():
        return None
    return NameEncoder.from_disk(Path(str(model_dir)) / ENCODER_DIR)
