"""Hybrid scoring: lexical and generative evidence per candidate concept, one log-linear score.

Why: a char 3-gram TF-IDF lookup and the generative model fail on different mentions (TF-IDF
wins where mention and gold name are near-identical, the model where they are far apart), so
the hybrid linker keeps both candidate lists and ranks their union with features from both.

A candidate concept's features come from its candidate names (the TF-IDF top-K names and the
constrained beam's names of that concept), each feature being the best value over those names:

* ``model``: the model's length-normalised log-probability of the name (the beam's own score,
  or a teacher-forced score of the same quantity for names the beam did not find);
* ``tfidf``: char 3-gram TF-IDF cosine between the mention and the name;
* ``exact``: 1 when a name equals the normalised mention;
* ``beam``: ``1 / (1 + rank)`` of the concept's best beam hypothesis, 0 when the beam missed it;
* ``dense``: cosine of the mention and the name under the model's dense name encoder
  (:mod:`spacy_angel.retrieval.name_encoder`), 0 when the model has none. Its weight defaults to 0,
  so weights fitted before the feature existed keep their ranking.

The concept score is ``w . features`` (weights in :class:`FusionWeights`, fitted on a dev set by
``spacy-angel train fuse`` and stored as ``fusion.json`` beside the model). The fitted model is
a Bradley-Terry / conditional-logit ranker, so a softmax of the scores over a mention's
candidates is a probability that the concept is the right one among them; that is what
``Candidate.score`` holds in hybrid mode (as a log-probability, so ``Candidate.probability`` and
the component's ``threshold`` keep their meaning).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from spacy_angel.errors import Errors, FusionError
from spacy_angel.fileio import atomic_write_json
from spacy_angel.types import Candidate

FUSION_FILE = "fusion.json"


FEATURES: Tuple[str, ...] = ("model", "tfidf", "exact", "beam", "dense")


MODEL_SCORE_FLOOR = -20.0  # a name the model could not score (never happens for KB names) ranks last


@dataclass
class FusionWeights:
    """Weights of the log-linear concept score, plus how they were obtained.

    The defaults are used when a model directory has no ``fusion.json``. They are the
    weights ``spacy-angel train fuse`` fitted on the NCBI-disease dev set for the CPU ANGEL
    model (``docs/results/ncbi-cpu-fuse-angel.json``), rounded: a ``fusion.json`` fitted for
    your own model and KB is better.
    """

    model: float = 0.5
    tfidf: float = 4.9
    exact: float = 1.2
    beam: float = 1.8
    dense: float = 0.0
    source: str = "default"
    dev: Dict[str, float] = field(default_factory=dict)

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, f) for f in FEATURES], dtype=np.float64)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object], origin: str = "fusion weights") -> "FusionWeights":
        unknown = sorted(set(data) - set(FEATURES) - {"source", "dev"})
        if unknown:
            raise FusionError(Errors.E250.format(origin=origin, unknown=unknown, expected=list(FEATURES)))
        values = {}
        for name in FEATURES:
            raw = data.get(name, getattr(cls, name))
            try:
                value = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise FusionError(Errors.E251.format(origin=origin, name=name, value=raw)) from None
            if not math.isfinite(value):
                raise FusionError(Errors.E252.format(origin=origin, name=name, value=value))
            values[name] = value
        dev = data.get("dev") or {}
        if not isinstance(dev, Mapping):
            raise FusionError(Errors.E253.format(origin=origin))
        return cls(**values, source=str(data.get("source", "fitted")), dev={str(k): float(v) for k, v in dev.items()})

    def to_disk(self, model_dir: Union[str, Path]) -> Path:
        """Write ``MODEL/fusion.json`` atomically."""
        return atomic_write_json(Path(model_dir) / FUSION_FILE, self.to_dict())

    @classmethod
    def from_disk(cls, path: Union[str, Path]) -> "FusionWeights":
        """Read ``fusion.json`` (a file, or a model directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / FUSION_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise FusionError(Errors.E254.format(path=path, line=err.lineno, msg=err.msg)) from None
        except UnicodeDecodeError as err:
            raise FusionError(Errors.E255.format(path=path, offset=err.start)) from None
        if not isinstance(data, dict):
            raise FusionError(Errors.E256.format(path=path))
        return cls.from_dict(data, origin=str(path))

    def to_file(self, path: Union[str, Path]) -> Path:
        """Write the weights to ``path`` itself, atomically (``train fuse --output FILE``)."""
        return atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "FusionWeights":
        """An explicit weights file (``--fusion FILE``): it must exist; a bad one is refused naming it."""
        path = Path(path)
        if not path.is_file():
            raise FusionError(Errors.E420.format(path=path))
        return cls.from_disk(path)

    @classmethod
    def for_model(cls, model_dir: Optional[Union[str, Path]]) -> "FusionWeights":
        """The model directory's ``fusion.json`` if it has one, else the documented defaults."""
        path = Path(model_dir) / FUSION_FILE if model_dir is not None else None
        if path is None or not path.is_file():
            return cls()
        try:
            return cls.from_disk(path)
        except FusionError as err:  # say what to do about it: a model never silently links without it
            # E110 names the file itself: its reason is the message without the code and the path
            text = str(err)
            rest = text.split("] ", 1)[1] if text.startswith("[E") and "] " in text else text
            reason = rest[len(f"{path}: "):] if rest.startswith(f"{path}: ") else text
            raise FusionError(Errors.E110.format(path=path, err=reason)) from None


@dataclass
class NameEvidence:
    """What is known about one candidate KB name for one mention."""

    name_idx: int
    model: float
    tfidf: float
    exact: bool
    beam_rank: Optional[int] = None
    dense: float = 0.0


@dataclass
class ConceptEvidence:
    """The candidate concepts of one mention: ids, best name per concept, feature matrix."""

    kb_ids: List[Tuple[str, ...]]
    names: List[int]
    features: np.ndarray  # (concepts, len(FEATURES))


def concept_evidence(evidence: Sequence[NameEvidence], ids_for_index) -> ConceptEvidence:
    """Group name evidence by concept (the KB id tuple a name denotes), feature-wise best value.

    ``ids_for_index(name_idx) -> tuple of ids``. A name that denotes several concepts counts
    for the tuple as a whole (as the beam linker reports it). The concept's displayed name is
    its name with the best model score.
    """
    rows: Dict[Tuple[str, ...], List[float]] = {}
    best_name: Dict[Tuple[str, ...], Tuple[float, int]] = {}
    for ev in evidence:
        ids = tuple(ids_for_index(ev.name_idx))
        if not ids:
            continue
        model = ev.model if math.isfinite(ev.model) else MODEL_SCORE_FLOOR
        beam = 0.0 if ev.beam_rank is None else 1.0 / (1.0 + ev.beam_rank)
        values = [max(model, MODEL_SCORE_FLOOR), float(ev.tfidf), 1.0 if ev.exact else 0.0, beam, float(ev.dense)]
        if ids in rows:
            rows[ids] = [max(a, b) for a, b in zip(rows[ids], values)]
            if model > best_name[ids][0]:
                best_name[ids] = (model, ev.name_idx)
        else:
            rows[ids] = values
            best_name[ids] = (model, ev.name_idx)
    kb_ids = list(rows)
    matrix = np.array([rows[k] for k in kb_ids], dtype=np.float64).reshape(len(kb_ids), len(FEATURES))
    return ConceptEvidence(kb_ids, [best_name[k][1] for k in kb_ids], matrix)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    if scores.size == 0:
        return scores
    shifted = scores - scores.max()
    return shifted - math.log(float(np.exp(shifted).sum()))


def ranking(features: np.ndarray, weights: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(fused scores, concept rows best first): ``w . features``, ties broken by the model
    score, then the TF-IDF cosine, then row order, so the ranking is deterministic."""
    fused = features @ weights
    return fused, np.lexsort((np.arange(len(fused)), -features[:, 1], -features[:, 0], -fused))


def fuse(concepts: ConceptEvidence, weights: FusionWeights, kb_names: Sequence[str], top_k: int) -> List[Candidate]:
    """Rank a mention's candidate concepts by ``w . features``; scores are log-probabilities.

    Order as :func:`ranking`. Ids already produced by a better concept are dropped, as in beam mode.
    """
    if not concepts.kb_ids:
        return []
    fused, order = ranking(concepts.features, weights.vector())
    logp = log_softmax(fused)
    out: List[Candidate] = []
    seen: set = set()
    for i in order.tolist():
        ids = tuple(x for x in concepts.kb_ids[i] if x not in seen)
        if not ids:
            continue
        seen.update(ids)
        out.append(Candidate(ids, kb_names[concepts.names[i]], float(logp[i])))
        if len(out) >= top_k:
            break
    return out
