"""Nearest KB names by a :class:`~spacy_angel.retrieval.name_encoder.NameEncoder`: a second retriever
beside the TF-IDF index, and the ``dense`` feature of hybrid fusion.

The name vectors are computed when the index is made and held in memory: ``n_names x dim`` float32,
42 MB for HPO's 40,691 training names at dim 256, but 6 GB for UMLS's 6M names,
so the dense retriever is meant for vocabularies up to about a million names (issue 26), not UMLS
(issue 27). Search is an exact matrix product by name blocks with a running top-k.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from spacy_angel.errors import Errors
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.candidates import concepts_from_hits
from spacy_angel.retrieval.exact_search import keep_top_k
from spacy_angel.retrieval.name_encoder import NameEncoder
from spacy_angel.types import Candidate


class DenseNameIndex:
    """The KB's names encoded once; top-k by cosine, and cosines of given names (hybrid features)."""

    def __init__(self, kb: KnowledgeBase, encoder: NameEncoder, *, name_chunk_size: int = 65536) -> None:
        self.kb = kb
        self.encoder = encoder
        self.name_chunk_size = name_chunk_size
        self.vectors = encoder.encode(list(kb.names), normalized=True)

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
