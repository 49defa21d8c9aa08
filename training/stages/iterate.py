"""Iterative ANGEL: mine -> DPO rounds, each from the previous round's model.
"""
from __future__ import annotations

import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from spacy_angel.errors import Errors
from spacy_angel.fileio import PathLike, atomic_directory, atomic_write_json
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.tfidf import NameIndex
from spacy_angel.types import Mention
from training.settings import IterateSettings, resolve
from training.stages.mining import mine_pairs

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- iterative rounds
def _copy_model_dir(src: Path, dest: Path, log: Dict[str, Any]) -> None:
    """Copy a model directory's files and ``iterative_log.json`` into ``dest`` via a staging dir and a
    rename: a run killed after the rename leaves the model with its log, never without (tests/test_kills.py)."""
    with atomic_directory(dest) as staging:
        shutil.copytree(src, staging, ignore=shutil.ignore_patterns("checkpoints", "checkpoint-*"), dirs_exist_ok=True)
        atomic_write_json(staging / "iterative_log.json", log, indent=1)


def iterative_rounds(
    model_dir: PathLike,
    kb: KnowledgeBase,
    mentions: Sequence[Mention],
    output_dir: Optional[PathLike] = None,
    settings: Optional[IterateSettings] = None,
    *,
    dev_mentions: Optional[Sequence[Mention]] = None,
    **overrides: Any,
) -> Path:
    """ANGEL's online loop: split the training mentions into ``chunks``; for each chunk, mine pairs
    with the *current* model, train it on them with :func:`training.stages.preference.train_preference`
    (reference model = the current model), and go on from the result; repeat for ``rounds``.

    ``settings`` (:class:`IterateSettings`; keyword ``overrides`` of its fields still work).
    With ``dev_mentions`` the model with the best dev Acc@1 (the starting model included) is kept
    and the loop stops after ``patience`` chunks without improvement; without, the last model is
    kept. ``output_dir`` gets that model and ``iterative_log.json``.
    """
    from spacy_angel.seq2seq.loading import load_model_and_tokenizer
    from spacy_angel.trie.kb_trie import build_trie
    from training.evaluation.dev_accuracy import dev_accuracy
    from training.stages.preference import train_preference  # T2's module, imported only when this runs

    s = resolve(IterateSettings, settings, overrides)
    if s.rounds < 1 or s.chunks < 1:
        raise ValueError(Errors.E364)
    if output_dir is None and s.output_dir is None:
        raise ValueError(Errors.E300)
    from training.runs import bookkeeping as run

    output_dir = run.check_output_dir(output_dir if output_dir is not None else s.output_dir, [model_dir], ValueError)
    mining = s.mining()
    work = output_dir.parent / f".{output_dir.name}.rounds"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    index = NameIndex(kb).fit()
    order = list(range(len(mentions)))
    random.Random(s.seed).shuffle(order)
    parts = [[mentions[i] for i in order[c::s.chunks]] for c in range(min(s.chunks, max(1, len(mentions))))]
    dev = [m for m in (dev_mentions or []) if any(g in kb for g in m.gold_ids)]
    trie = None

    def dev_acc(path: Path) -> Optional[float]:
        nonlocal trie
        if not dev:
            return None
        model, tok = load_model_and_tokenizer(path)
        if trie is None:
            trie = build_trie(kb, tok)
        return dev_accuracy(model, tok, kb, trie, dev, num_beams=s.num_beams, batch_size=s.mine_batch_size)["acc1"]

    current = Path(model_dir)
    best_dir, best_acc = current, dev_acc(current)
    log: Dict[str, Any] = {"initial_dev_acc1": best_acc, "steps": []}
    stale = 0
    step = 0
    started = time.time()
    stop = False
    for r in range(s.rounds):
        for c, part in enumerate(parts):
            pairs, stats = mine_pairs(current, kb, part, mining, index=index)
            entry: Dict[str, Any] = {"round": r, "chunk": c, "mining": stats}
            if not pairs:
                entry["skipped"] = "no pairs"
                log["steps"].append(entry)
                continue
            stage = work / f"round{r}-chunk{c}"
            train_preference(current, kb, pairs, stage, s.preference(seed=s.seed + step, ref_model_dir=None, output_dir=None))
            step += 1
            acc = dev_acc(stage)
            entry["dev_acc1"] = acc
            previous, current = current, stage
            if dev:
                if acc is not None and best_acc is not None and acc > best_acc:
                    best_dir, best_acc, stale = stage, acc, 0
                else:
                    stale += 1
            else:
                best_dir = stage
            if previous.parent == work and previous != best_dir:
                shutil.rmtree(previous, ignore_errors=True)
            log["steps"].append(entry)
            logger.info("round %d chunk %d: %d pairs, dev acc@1 %s", r, c, len(pairs), acc)
            if dev and stale >= s.patience:
                stop = True
                break
        if stop:
            break
    log.update({"best_dev_acc1": best_acc, "best": best_dir.name, "wall_time_s": round(time.time() - started, 2)})
    _copy_model_dir(best_dir, output_dir, log)
    shutil.rmtree(work, ignore_errors=True)
    return output_dir
