"""Nearest KB names by a :class:`~spacy_angel.retrieval.name_encoder.NameEncoder`: a second retriever
beside the TF-IDF index, and the ``dense`` feature of hybrid fusion.

The name vectors are computed when the index is made (about a second per 40,000 names on one core)
and held in memory: ``n_names x dim`` float32, 41 MB for HPO at dim 256, but 6 GB for UMLS's 6M names,
so the dense retriever is meant for vocabularies up to about a million names (issue 26), not UMLS
(issue 27). Search is an exact matrix product by name blocks with a running top-k.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from spacy_angel.errors import Errors
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.candidates import concepts_from_hits
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
        """Top-``k`` ``(name_index, cosine)`` per query, best first (equal cosines: the smaller name index first)."""
        if k <= 0 or not len(queries):
            return [[] for _ in queries]
        q = self.encoder.encode(list(queries))
        n = len(self.vectors)
        best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_i = np.zeros((len(q), 0), dtype=np.int64)
        for start in range(0, n, self.name_chunk_size):
            sims = q @ self.vectors[start : start + self.name_chunk_size].T
            scores = np.concatenate([best_s, sims], axis=1)
            index = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + sims.shape[1]), sims.shape)], axis=1)
            keep = min(k, scores.shape[1])
            # ties break on the smaller index: sort by (-score, index) within the kept set
            part = np.argpartition(-scores, keep - 1, axis=1)[:, :keep] if keep < scores.shape[1] else np.argsort(-scores, 1)
            best_s = np.take_along_axis(scores, part, 1)
            best_i = np.take_along_axis(index, part, 1)
        order = np.lexsort((best_i, -best_s), axis=1) if best_s.size else best_s.astype(np.int64)
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
        return [[(int(i), float(s)) for i, s in zip(ri, rs)] for ri, rs in zip(best_i.tolist(), best_s.tolist())]

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
