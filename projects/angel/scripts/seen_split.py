"""Acc@1 of test reports split by whether each test mention's text was read in training.

Why: in corpora split at random by record (AskAPatient's folds) most test mentions repeat a
training text, and a model that has read its training set is right on nearly all of them; a
training stage can then help the repeated texts and hurt the new ones while the overall figure
hides both (the seen / unseen split of Tutubalina et al. 2020). A mention counts as seen when its
normalised text (NFKC, whitespace collapsed, lowercased: the key ``train crossfit --fold-by
surface`` folds by) is the text of any training mention.

Output keys: ``n_seen`` / ``n_unseen``; ``reports[NAME]``: ``acc1``, ``seen_acc1``, ``unseen_acc1``;
``diffs["ROW-BASE"]``: the same as ROW minus BASE (mentions are paired by position, so the
reports must be of one test file; a differing mention text is an error).

``--held-out HELD`` (a part of TRAIN, e.g. ``scripts/hold_out_texts.py --held``) splits the seen
mentions once more, for models whose positive stage did not read HELD: ``n_held`` / ``held_acc1``
(text in HELD) and ``n_read`` / ``read_acc1`` (seen, text not in HELD).

Usage: python scripts/seen_split.py TRAIN [--corpus-format askapatient] --report NAME=REPORT.json ...
       [--diff ROW:BASE ...] [--held-out HELD] --output OUT.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from report import read_json  # the project's JSON reader with file-naming errors (scripts import each other by bare name)
from spacy_angel.fileio import atomic_write_json
from spacy_angel.kb.normalize import normalize_name


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


def split_accuracy(mentions: Sequence[Dict[str, Any]], groups: Dict[str, Sequence[bool]]) -> Dict[str, Optional[float]]:
    """Acc@1 over all mentions and over each group (``{"seen": flags, ...}`` -> ``seen_acc1``)."""
    right = [bool(m["correct@1"]) for m in mentions]
    out = {"acc1": _acc(right)}
    for name, flags in groups.items():
        out[f"{name}_acc1"] = _acc([r for r, f in zip(right, flags) if f])
    return out


def _minus(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", type=Path, help="the training corpus the models read")
    parser.add_argument("--corpus-format", default="auto")
    parser.add_argument("--report", action="append", default=[], required=True, help="NAME=REPORT.json (train evaluate)")
    parser.add_argument("--diff", action="append", default=[], help="ROW:BASE, names given with --report")
    parser.add_argument("--held-out", type=Path, help="a part of TRAIN the positive stage did not read: splits the seen mentions into held / read")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    from training.data.corpora import read_corpus  # after argument errors: it imports the corpus readers

    train_texts = {normalize_name(m.surface) for m in read_corpus(args.train, format=args.corpus_format)}
    held_texts = {normalize_name(m.surface) for m in read_corpus(args.held_out, format=args.corpus_format)} if args.held_out else set()
    if held_texts - train_texts:
        raise SystemExit(f"error: {args.held_out}: {len(held_texts - train_texts)} texts are not in {args.train} (not a part of it?)")
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
    texts = [normalize_name(m["mention"]) for m in first]
    groups = {"seen": [t in train_texts for t in texts], "unseen": [t not in train_texts for t in texts]}
    result: Dict[str, Any] = {"train": str(args.train)}
    if args.held_out:
        groups.update(held=[t in held_texts for t in texts], read=[t in train_texts and t not in held_texts for t in texts])
        result["held_out"] = str(args.held_out)
    result["n"] = len(first)
    result.update({f"n_{name}": sum(flags) for name, flags in groups.items()})
    result["reports"] = {name: {"path": paths[name], **split_accuracy(m, groups)} for name, m in reports.items()}
    result["diffs"] = {}
    for value in args.diff:
        row, base = _named(value, ":", "--diff")
        for name in (row, base):
            if name not in reports:
                raise SystemExit(f"error: --diff {value}: no --report named {name!r}")
        a, b = result["reports"][row], result["reports"][base]
        result["diffs"][f"{row}-{base}"] = {k: _minus(a[k], b[k]) for k in a if k.endswith("acc1")}
    atomic_write_json(args.output, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("reports",)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
