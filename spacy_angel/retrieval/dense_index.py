"""Nearest KB names by a :class:`~spacy_angel.retrieval.name_encoder.NameEncoder`: a second retriever
beside the TF-IDF index, and the ``dense`` feature of hybrid fusion.

The name vectors are ``n_names x dim`` float32: 42 MB for HPO's 40,691 training names at dim 256, 6 GB
for UMLS's 6M names, and encoding them is most of a hybrid linker's load (6.8 s for MEDIC's 77k names).
Given a folder (``cache_dir``), they are written there once (``dense-names-<kb>-<encoder>.safetensors``,
temp + rename) and memory-mapped on every later load, so loading skips the encoding and ``n_process``
workers share the pages instead of holding a copy each (issue 27); a file that does not match the KB
and encoder is encoded again and replaced, a folder that cannot be written only loses the file.

The linker's folder is the user's cache (:func:`default_vectors_dir`: ``$SPACY_ANGEL_CACHE/dense-names``,
by default ``~/.cache/spacy-angel/dense-names``; ``SPACY_ANGEL_CACHE=off`` encodes in memory), not the
KB's folder: that is often another owner's output (a weasel step's, whose later steps would all rerun
when a file appears in it). Search is an exact matrix product by name blocks with a running top-k:
linear in the names, so the dense retriever is meant for vocabularies up to about a million names.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from spacy_angel.errors import Errors, Warnings
from spacy_angel.fileio import user_cache_dir
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.mapped_arrays import read_arrays, write_arrays
from spacy_angel.retrieval.candidates import concepts_from_hits
from spacy_angel.retrieval.exact_search import keep_top_k
from spacy_angel.retrieval.name_encoder import NameEncoder
from spacy_angel.types import Candidate

logger = logging.getLogger(__name__)

_VECTORS_FORMAT = "spacy_angel.dense_names"


#: values of ``SPACY_ANGEL_CACHE`` that turn the vectors cache off
_OFF = ("", "off", "none", "0", "false")


def default_vectors_dir() -> Optional[Path]:
    """The linker's folder for name vectors: ``$SPACY_ANGEL_CACHE/dense-names`` (``~/.cache/spacy-angel``
    when unset, as the main job's cache), or None when ``SPACY_ANGEL_CACHE`` is ``off``."""
    if os.environ.get("SPACY_ANGEL_CACHE", "default").strip().lower() in _OFF:
        return None
    return user_cache_dir() / "dense-names"


def encoder_fingerprint(encoder: NameEncoder) -> str:
    """sha256 of what decides an encoder's vectors: its projection and both idf vectors."""
    h = hashlib.sha256()
    for array in (encoder.projection, encoder.features.char.idf_, encoder.features.word.idf_):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def name_vectors(kb: KnowledgeBase, encoder: NameEncoder, cache_dir: Optional[Union[str, Path]] = None) -> np.ndarray:
    """The KB's names encoded: mapped from ``cache_dir`` when a file there was written for this KB and
    encoder, else encoded (and written there for the next load when ``cache_dir`` is given)."""
    if cache_dir is None:
        return encoder.encode(list(kb.names), normalized=True)
    key, kb_key = encoder_fingerprint(encoder), kb.fingerprint()
    path = Path(cache_dir) / f"dense-names-{kb_key[:16]}-{key[:16]}.safetensors"  # one folder serves many KBs
    wanted = {"format": _VECTORS_FORMAT, "kb_fingerprint": kb_key, "encoder_fingerprint": key}
    if path.is_file():
        try:
            arrays, meta = read_arrays(path, mmap=True)
            vectors = arrays["vectors"]
            if {k: meta.get(k) for k in wanted} == wanted and vectors.shape == (kb.num_names, encoder.dim):
                return vectors
            raise ValueError("written for another KB or encoder")
        except (OSError, ValueError, KeyError) as err:
            logger.warning(Warnings.W004.format(path=path, err=err))
    vectors = encoder.encode(list(kb.names), normalized=True)
    try:
        write_arrays(path, {"vectors": vectors}, wanted)
    except OSError as err:  # a read-only or full cache: link from memory
        logger.warning(Warnings.W004.format(path=path, err=err))
    return vectors


class DenseNameIndex:
    """The KB's names encoded once; top-k by cosine, and cosines of given names (hybrid features)."""

    def __init__(self, kb: KnowledgeBase, encoder: NameEncoder, *, name_chunk_size: int = 65536,
                 cache_dir: Optional[Union[str, Path]] = None) -> None:
        self.kb = kb
        self.encoder = encoder
        self.name_chunk_size = name_chunk_size
        self.vectors = name_vectors(kb, encoder, cache_dir)  # read-only when mapped

    def nearest_names(self, queries: Sequence[str], k: int) -> List[List[Tuple[int, float]]]:
        """Top-``k`` ``(name_index, cosine)`` per query, best first (equal cosines: the smaller name index
        first), by the TF-IDF search's own rule (:func:`~spacy_angel.retrieval.exact_search.keep_top_k`)."""
        if k <= 0 or not len(queries):
            return [[] for _ in queries]
        q = self.encoder.encode(list(queries))
        best_r = best_c = np.zeros(0, dtype=np.int64)
        best_s = np.zeros(0, dtype=np.float32)
        for start in range(0, len(self.vectors), self.name_chunk_size):
            sims = q @ self.vectors[start : start + self.name_chunk_size].T
            width = sims.shape[1]
            # each row's candidates in this block: its k best, ties at the k-th included (keep_top_k cuts them)
            kth = np.partition(sims, width - k, axis=1)[:, width - k : width - k + 1] if width > k else -np.inf
            rows, cols = np.nonzero(sims >= kth)
            best_r, best_c, best_s = keep_top_k(np.concatenate([best_r, rows]), np.concatenate([best_c, cols + start]),
                                                np.concatenate([best_s, sims[rows, cols]]), k)
        out: List[List[Tuple[int, float]]] = [[] for _ in queries]
        for r, c, score in zip(best_r.tolist(), best_c.tolist(), best_s.tolist()):
            out[r].append((int(c), float(score)))
        return out

    def cosine(self, query_texts: Sequence[str], name_indices_per_query: Sequence[Sequence[int]]) -> List[np.ndarray]:
        """Cosine of each query to the given KB names, in that order (the hybrid ``dense`` feature)."""
        if len(name_indices_per_query) != len(query_texts):
            raise ValueError(Errors.E218.format(lists=len(name_indices_per_query), queries=len(query_texts)))
        if not len(query_texts):
            return []
        q = self.encoder.encode(list(query_texts))
        out = []
        for row, idx in zip(q, name_indices_per_query):
            idx = np.asarray(idx, dtype=np.int64).reshape(-1)
            if len(idx) and (idx.min() < 0 or idx.max() >= len(self.vectors)):
                raise IndexError(Errors.E219.format(n=len(self.vectors)))
            out.append((self.vectors[idx] @ row).astype(np.float32))
        return out

    def link(self, mentions: Sequence[str], k: int = 5) -> List[List[Candidate]]:
        """Nearest-name linking by the encoder alone: up to ``k`` distinct concepts per mention."""
        if k <= 0:
            return [[] for _ in mentions]
        return [concepts_from_hits(self.kb, hits, k) for hits in self.nearest_names(mentions, max(4 * k, k + 16))]
