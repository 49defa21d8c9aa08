"""Fitting the hybrid linker's fusion weights on a labelled dev set (``spacy-angel train fuse``).

The concept score is log-linear in the features of :mod:`spacy_angel.fusion`. We fit it as a
pairwise logistic regression (scikit-learn) on feature differences ``gold - other`` between
each dev mention's gold candidate and its other candidates, which is the maximum-likelihood
Bradley-Terry ranker: the weights rank, and a softmax of the scores over a mention's
candidates is a calibrated "this one is right" probability. Each mention weighs the same
whatever its candidate count. The regularisation strength is chosen by 5-fold
cross-validation of Acc@1 over dev mentions, then the model is refitted on all of dev.
Mentions whose gold concept is not among the candidates carry no information on the weights
and are left out of the fit (they count as errors in every accuracy reported).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Set

import numpy as np

from spacy_angel.fusion import FEATURES, ConceptEvidence, FusionWeights

logger = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class FusionData:
    """Dev evidence: per mention, its candidate concepts and which of them are gold."""

    concepts: List[ConceptEvidence]
    gold_mask: List[np.ndarray]  # bool per candidate concept

    @classmethod
    def build(cls, concepts: Sequence[ConceptEvidence], gold: Sequence[Set[str]], canon: Callable[[str], str]) -> "FusionData":
        masks = []
        for ev, g in zip(concepts, gold):
            masks.append(np.array([any(canon(i) in g for i in ids) for ids in ev.kb_ids], dtype=bool))
        return cls(list(concepts), masks)

    def __len__(self) -> int:
        return len(self.concepts)


def acc_at_1(data: FusionData, weights: np.ndarray, indices: Optional[Sequence[int]] = None) -> float:
    """Share of mentions whose top fused concept is gold (ties go to the better model score)."""
    idx = range(len(data)) if indices is None else indices
    hits, n = 0, 0
    for i in idx:
        n += 1
        ev = data.concepts[i]
        if not len(ev.kb_ids):
            continue
        fused = ev.features @ weights
        # same tie-break as spacy_angel.fusion.fuse: fused, then model, then tfidf, then order
        order = np.lexsort((np.arange(len(fused)), -ev.features[:, 1], -ev.features[:, 0], -fused))
        hits += bool(data.gold_mask[i][order[0]])
    return hits / n if n else 0.0


def pairwise_design(data: FusionData, indices: Sequence[int]):
    """Symmetric difference rows (gold - other: 1, other - gold: 0), weights 1/pairs per mention."""
    rows, labels, sample_weight = [], [], []
    for i in indices:
        mask = data.gold_mask[i]
        if not mask.any() or mask.all():
            continue
        feats = data.concepts[i].features
        gold_best = feats[mask]
        # the gold concept with the highest model score stands for the mention's gold
        g = gold_best[np.argmax(gold_best[:, 0])]
        others = feats[~mask]
        diff = g[None, :] - others
        w = 1.0 / len(others)
        rows.extend([diff, -diff])
        labels.extend([np.ones(len(others)), np.zeros(len(others))])
        sample_weight.extend([np.full(len(others), w), np.full(len(others), w)])
    if not rows:
        return None
    return np.concatenate(rows), np.concatenate(labels), np.concatenate(sample_weight)


def _fit_weights(data: FusionData, indices: Sequence[int], c: float) -> Optional[np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    design = pairwise_design(data, indices)
    if design is None:
        return None
    x, y, sw = design
    model = LogisticRegression(C=c, fit_intercept=False, max_iter=2000)
    model.fit(x, y, sample_weight=sw)
    return model.coef_.ravel().astype(np.float64)


def fit_fusion(data: FusionData, seed: int = 0, folds: int = 5) -> Dict[str, object]:
    """Weights (as :class:`FusionWeights`) plus the cross-validated dev Acc@1 of each C."""
    n = len(data)
    if n == 0:
        raise ValueError("no dev mentions to fit fusion weights on")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    fold_of = np.empty(n, dtype=int)
    fold_of[order] = np.arange(n) % max(2, min(folds, n))
    cv: Dict[str, float] = {}
    for c in C_GRID:
        hits = 0.0
        for f in range(max(2, min(folds, n))):
            train = np.nonzero(fold_of != f)[0]
            test = np.nonzero(fold_of == f)[0]
            w = _fit_weights(data, train, c)
            if w is None:
                continue
            hits += acc_at_1(data, w, test) * len(test)
        cv[str(c)] = hits / n
    best_c = max(C_GRID, key=lambda c: (cv[str(c)], -abs(np.log10(c))))
    w = _fit_weights(data, range(n), best_c)
    if w is None:
        raise ValueError("no dev mention has its gold concept among several candidates: cannot fit weights")
    weights = FusionWeights(**{name: float(v) for name, v in zip(FEATURES, w)}, source="fitted")
    return {"weights": weights, "C": best_c, "cv_acc@1": cv, "fit_acc@1": acc_at_1(data, w)}
