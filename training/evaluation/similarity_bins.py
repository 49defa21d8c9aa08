"""TF-IDF evaluation helpers: the mention/gold similarity bins of ANGEL's Figure 4 analysis.

The char 3-gram TF-IDF name index itself is runtime code (:mod:`spacy_angel.retrieval.tfidf`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from spacy_angel.errors import Errors
from spacy_angel.retrieval.tfidf import NameIndex

DEFAULT_EDGES: Tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def bin_labels(edges: Sequence[float] = DEFAULT_EDGES) -> List[str]:
    """Human-readable labels for similarity bins, e.g. ``"0.2-0.4"``."""
    return [f"{edges[i]:.1f}-{edges[i + 1]:.1f}" for i in range(len(edges) - 1)]


def value_to_bin(value: float, edges: Sequence[float] = DEFAULT_EDGES) -> int:
    """Bin index of ``value``: bins are ``[e_i, e_{i+1})``, the last one closed (1.0 included)."""
    if len(edges) < 2:
        raise ValueError(Errors.E377)
    idx = int(np.searchsorted(np.asarray(edges, dtype=float), value, side="right")) - 1
    return min(max(idx, 0), len(edges) - 2)


def similarity_bin(
    index: NameIndex, mention: str, gold_names: Sequence[str], edges: Sequence[float] = DEFAULT_EDGES
) -> Optional[int]:
    """Bin (index into ``edges``) of the max cosine of ``mention`` to any gold-concept name.

    ``None`` when there is no gold name to compare with (e.g. an id missing from the KB).
    """
    sim = index.max_similarity(mention, gold_names)
    return None if sim is None else value_to_bin(sim, edges)
