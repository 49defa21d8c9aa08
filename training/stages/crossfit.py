"""Cross-fitted negative mining: every training mention is mined by a model that never saw it.

Why: a positive model decodes its own training mentions almost perfectly (95.9% Acc@1 on
NCBI-disease train), so the pairs mined on them are easy ones. Cross-fitting, as in K-fold
cross-validation: split the training mentions into ``folds`` by document, train one positive
model per fold on the *other* folds (same positive settings as the full model; the step budget
is the caller's), mine the held-out fold with it (:func:`training.stages.mining.mine_pairs`), and
write one pairs file whose rows carry their ``fold``. The pairs then train the full positive
model (``train dpo``), as with ordinary mining.

Folds are by document (``fold_by="document"``) so that the mentions of one abstract (which share
context and often the same surface) never sit on both sides. A corpus without documents, such as
AskAPatient (one "document", 15,612 training records over 3,884 distinct texts), is split by
normalised surface instead (``fold_by="surface"``): every record of one text lands in one fold,
so a fold model has never read the texts it mines, as a test mention with a new text (35% of
AskAPatient fold 0 test) is new to the full model. Either way the sorted unit keys are shuffled
with ``random.Random(seed)`` and the i-th key of that order goes to fold ``i mod folds``.

``only_fold`` trains (or reuses) one fold model and stops, so K processes can train the K fold
models at once; a run without it then reuses them all and mines.

Fold models are written to ``fold_dir/fold-<f>/`` with ``crossfit_fold.json`` (the held-out
documents or surfaces, a digest of the training mentions, the settings, the starting model). A fold model
whose record matches is reused, and a fold killed mid-training resumes from its checkpoints
(:func:`training.stages.positive.train_positive`), so a re-run of the same command continues.

Names, too (``hold_out_names``, on by default): BioSyn's dictionaries add every training
mention's surface to the KB as a name of its gold concept, so with ``--kb-names-as-mentions`` a
fold model would still read each held-out surface as an input. Each fold model therefore trains
with a copy of the KB (:func:`without_names`) lacking the surfaces that only held-out mentions
have; the held-out fold is mined against the full KB, like the full model's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

from spacy_angel.errors import Errors
from spacy_angel.fileio import atomic_write_json
from spacy_angel.kb.normalize import normalize_name
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.tfidf import NameIndex
from spacy_angel.types import Mention
from training.data.kb_subsets import without_names
from training.examples.pair_files import PreferencePair
from training.settings import CrossfitSettings, PositiveSettings, resolve
from training.stages.mining import mine_pairs
from training.stages.positive import train_positive

logger = logging.getLogger(__name__)


PathLike = Union[str, Path]


RECORD = "crossfit_fold.json"


FOLD_UNITS = ("document", "surface")


def fold_unit(m: Mention, fold_by: str, lowercase: bool = True) -> str:
    """The key a mention is kept whole by: its document id or its normalised surface."""
    if fold_by == "document":
        return m.doc_id
    if fold_by == "surface":
        return normalize_name(m.surface, lowercase)
    raise ValueError(Errors.E358.format(units=", ".join(FOLD_UNITS), fold_by=fold_by))


def unit_folds(mentions: Sequence[Mention], folds: int, seed: int = 0, fold_by: str = "document", lowercase: bool = True) -> Dict[str, int]:
    """Unit key (:func:`fold_unit`) -> fold (module doc); every fold gets at least one unit."""
    if folds < 2:
        raise ValueError(Errors.E359.format(folds=folds))
    units = sorted({fold_unit(m, fold_by, lowercase) for m in mentions})
    if len(units) < folds:
        hint = " (a corpus without documents can be split with --fold-by surface)" if fold_by == "document" else ""
        raise ValueError(Errors.E360.format(n=len(units), fold_by=fold_by, folds=folds, hint=hint))
    random.Random(seed).shuffle(units)
    return {unit: i % folds for i, unit in enumerate(units)}


def mention_key(m: Mention) -> str:
    """A mention's identity in fold records and tests: document, text, offsets and gold ids."""
    return json.dumps([m.doc_id, m.text, m.start, m.end, sorted(m.gold_ids)], ensure_ascii=False)


def mentions_digest(mentions: Sequence[Mention]) -> str:
    digest = hashlib.sha256()
    for m in mentions:
        digest.update(mention_key(m).encode("utf-8") + b"\n")
    return digest.hexdigest()


def held_out_surfaces(kb: KnowledgeBase, held: Sequence[Mention], train: Sequence[Mention]) -> Set[str]:
    """Normalised surfaces of the held-out mentions that no training mention shares."""
    norm = lambda m: normalize_name(m.surface, kb.lowercase)  # noqa: E731
    return {norm(m) for m in held} - {norm(m) for m in train}


def _settings_record(s: PositiveSettings) -> Dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(s).items() if k not in ("output_dir", "progress", "resume", "max_minutes")}


def _reusable(model_dir: Path, record: Dict[str, Any]) -> bool:
    path = model_dir / RECORD
    if not path.is_file() or not (model_dir / "training_log.json").is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")) == record
    except (OSError, json.JSONDecodeError):
        return False


def crossfit_pairs(
    init_model: PathLike,
    kb: KnowledgeBase,
    mentions: Sequence[Mention],
    settings: Optional[CrossfitSettings] = None,
    *,
    dev_mentions: Optional[Sequence[Mention]] = None,
    **overrides: Any,
) -> Tuple[List[PreferencePair], Dict[str, Any]]:
    """Train ``settings.folds`` positive models from ``init_model``, each without one fold, and mine
    each held-out fold with the model that did not see it. Returns the pairs (``fold`` set) and
    stats (per fold: documents or surfaces, training and mined mentions, the fold model's mining stats).

    ``settings`` (:class:`CrossfitSettings`; keyword ``overrides`` of its fields still work):
    fold ``f`` is written to ``settings.output_dir/fold-f``; ``dev_mentions`` select each fold
    model's checkpoint as in ``train positive``.
    """
    s = resolve(CrossfitSettings, settings, overrides)
    if s.output_dir is None:
        raise ValueError(Errors.E361)
    positive, mining, folds, seed = s.positive(), s.mining(), s.folds, s.fold_seed
    if mining.strategy not in ("angel", "all", "top10"):
        raise ValueError(Errors.E362.format(strategy=mining.strategy))
    if s.only_fold is not None and not 0 <= s.only_fold < folds:
        raise ValueError(Errors.E363.format(last=folds - 1, only_fold=s.only_fold))
    fold_dir = Path(s.output_dir)
    assignment = unit_folds(mentions, folds, seed, s.fold_by, kb.lowercase)
    fold_of = [assignment[fold_unit(m, s.fold_by, kb.lowercase)] for m in mentions]
    index = NameIndex(kb).fit() if s.only_fold is None else None
    pairs: List[PreferencePair] = []
    stats: Dict[str, Any] = {"folds": folds, "fold_by": s.fold_by, "seed": seed, "init_model": str(init_model), "per_fold": []}
    started = time.time()
    for f in range(folds) if s.only_fold is None else (s.only_fold,):
        held = [m for m, g in zip(mentions, fold_of) if g == f]
        train = [m for m, g in zip(mentions, fold_of) if g != f]
        model_dir = fold_dir / f"fold-{f}"
        hidden = held_out_surfaces(kb, held, train) if s.hold_out_names else set()
        fold_kb = without_names(kb, hidden) if hidden else kb
        record = {
            "fold": f,
            "folds": folds,
            "seed": seed,
            "init_model": str(init_model),
            f"held_out_{s.fold_by}s": sorted(unit for unit, g in assignment.items() if g == f),
            "train_mentions": len(train),
            "train_digest": mentions_digest(train),
            "hold_out_names": s.hold_out_names,
            "kb_names_held_out": sum(1 for n in hidden if kb.ids_for(n)),
            "positive": _settings_record(positive),
        }
        reused = _reusable(model_dir, record)
        if not reused:
            logger.info("fold %d/%d: training on %d mentions (%d held out)", f + 1, folds, len(train), len(held))
            train_positive(init_model, fold_kb, train, model_dir, dataclasses.replace(positive, output_dir=None), dev_mentions=dev_mentions)
            atomic_write_json(model_dir / RECORD, record, indent=1)
        if s.only_fold is not None:
            stats.update(only_fold=f, model=str(model_dir), reused_model=reused, train_mentions=len(train))
            return [], stats
        fold_pairs, fold_stats = mine_pairs(model_dir, kb, held, mining, index=index)
        pairs.extend(dataclasses.replace(p, fold=f) for p in fold_pairs)
        stats["per_fold"].append(
            {
                "fold": f,
                "model": str(model_dir),
                "reused_model": reused,
                f"{s.fold_by}s": len(record[f"held_out_{s.fold_by}s"]),
                "train_mentions": len(train),
                "mined_mentions": len(held),
                "kb_names_held_out": record["kb_names_held_out"],
                "mining": fold_stats,
            }
        )
    mined = [s["mining"] for s in stats["per_fold"]]
    stats["pairs"] = len(pairs)
    stats["mentions"] = sum(s["mentions"] for s in mined)
    stats["mentions_with_pairs"] = sum(s["mentions_with_pairs"] for s in mined)
    usable = sum(s["mentions"] - s["mentions_not_in_kb"] for s in mined)
    stats["acc@1"] = sum(s["top1_correct"] for s in mined) / usable if usable else 0.0
    kinds: Dict[str, int] = {}
    for s in mined:
        for kind, n in s["pairs_by_kind"].items():
            kinds[kind] = kinds.get(kind, 0) + n
    stats["pairs_by_kind"] = kinds
    stats["seconds"] = round(time.time() - started, 2)
    return pairs, stats
