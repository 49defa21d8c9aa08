"""Acc@1 of test reports split by whether each test mention's text was read in training.

Why: in corpora split at random by record (AskAPatient's folds) most test mentions repeat a
training text, and a model that has read its training set is right on nearly all of them; a
training stage can then help the repeated texts and hurt the new ones while the overall figure
hides both (the seen / unseen split of Tutubalina et al. 2020). A mention counts as seen when its
normalised text (NFKC, whitespace collapsed, lowercased: the key ``train crossfit --fold-by
surface`` folds by) is the text of any training mention.

Output keys: ``n_seen`` / ``n_unseen``; ``reports[NAME]``: ``acc1``, ``seen_acc1``, ``unseen_acc1``;
``diffs["ROW-BASE"]``: the same three as ROW minus BASE (mentions are paired by position, so the
reports must be of one test file; a differing mention text is an error).

Usage: python scripts/seen_split.py TRAIN [--corpus-format askapatient] --report NAME=REPORT.json ...
       [--diff ROW:BASE ...] --output OUT.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from report import read_json  # the project's JSON reader with file-naming errors (scripts import each other by bare name)
from spacy_angel.fileio import atomic_write_json
from spacy_angel.kb import normalize_name


def _named(value: str, sep: str, what: str) -> Tuple[str, str]:
    name, found, rest = value.partition(sep)
    if not found or not name or not rest:
        raise SystemExit(f"error: {what} must look like NAME{sep}VALUE, got {value!r}")
    return name, rest


def read_report(path: Path) -> List[Dict[str, Any]]:
    data = read_json(path, "report")
    mentions = data.get("mentions") if isinstance(data, dict) else None
    if not isinstance(mentions, list) or not mentions:
        raise SystemExit(f"error: {path}: field mentions missing or empty (not a `train evaluate` report?)")
    for i, m in enumerate(mentions):
        if not isinstance(m, dict) or "mention" not in m or "correct@1" not in m:
            raise SystemExit(f"error: {path}: mentions[{i}] lacks the fields mention and correct@1")
    return mentions


def _acc(flags: Sequence[bool]) -> Optional[float]:
    return sum(flags) / len(flags) if flags else None


def split_accuracy(mentions: Sequence[Dict[str, Any]], seen: Sequence[bool]) -> Dict[str, Optional[float]]:
    right = [bool(m["correct@1"]) for m in mentions]
    return {
        "acc1": _acc(right),
        "seen_acc1": _acc([r for r, s in zip(right, seen) if s]),
        "unseen_acc1": _acc([r for r, s in zip(right, seen) if not s]),
    }


def _minus(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", type=Path, help="the training corpus the models read")
    parser.add_argument("--corpus-format", default="auto")
    parser.add_argument("--report", action="append", default=[], required=True, help="NAME=REPORT.json (train evaluate)")
    parser.add_argument("--diff", action="append", default=[], help="ROW:BASE, names given with --report")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    from training.corpora import read_corpus  # after argument errors: it imports the corpus readers

    train_texts = {normalize_name(m.surface) for m in read_corpus(args.train, format=args.corpus_format)}
    reports: Dict[str, List[Dict[str, Any]]] = {}
    paths: Dict[str, str] = {}
    for value in args.report:
        name, path = _named(value, "=", "--report")
        if name in reports:
            raise SystemExit(f"error: --report name {name!r} given twice")
        reports[name], paths[name] = read_report(Path(path)), path
    first_name, first = next(iter(reports.items()))
    for name, mentions in reports.items():
        if len(mentions) != len(first):
            raise SystemExit(f"error: {paths[name]} has {len(mentions)} mentions, {paths[first_name]} {len(first)}: not one test file")
        for i, (a, b) in enumerate(zip(mentions, first)):
            if a["mention"] != b["mention"]:
                raise SystemExit(f"error: {paths[name]}: mentions[{i}] is {a['mention']!r}, {paths[first_name]} has {b['mention']!r}")
    seen = [normalize_name(m["mention"]) in train_texts for m in first]
    result: Dict[str, Any] = {
        "train": str(args.train),
        "n": len(first), "n_seen": sum(seen), "n_unseen": len(seen) - sum(seen),
        "reports": {name: {"path": paths[name], **split_accuracy(m, seen)} for name, m in reports.items()},
        "diffs": {},
    }
    for value in args.diff:
        row, base = _named(value, ":", "--diff")
        for name in (row, base):
            if name not in reports:
                raise SystemExit(f"error: --diff {value}: no --report named {name!r}")
        a, b = result["reports"][row], result["reports"][base]
        result["diffs"][f"{row}-{base}"] = {k: _minus(a[k], b[k]) for k in ("acc1", "seen_acc1", "unseen_acc1")}
    atomic_write_json(args.output, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("reports",)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
