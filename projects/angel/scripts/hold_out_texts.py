"""Split an AskAPatient training file into the records of one fold of texts and the rest.

Why: the hold-out ablation of cpu-aap (``docs/results.md``, rows ``holdout_*``) trains the positive
model without a share of the training texts, mines those texts with it (``train mine`` on the held
file) and runs DPO on what it got wrong, so the preference stage acts on texts the model has not
read. The folds are ``train crossfit --fold-by surface``'s: the same normalised-text key and the
same seeded assignment (:func:`training.stages.crossfit.unit_folds`), so every record of one text lands on
one side. Lines are copied byte for byte (AskAPatient files are not always UTF-8; they are decoded for
the key as the corpus reader decodes them).

Usage: python scripts/hold_out_texts.py TRAIN --folds 4 --fold 0 --rest REST.txt --held HELD.txt
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", type=Path, help="AskAPatient training file (conceptID<TAB>name<TAB>mention)")
    parser.add_argument("--folds", type=int, required=True, help="K: the texts are split into K folds")
    parser.add_argument("--fold", type=int, default=0, help="the fold held out (0 .. K-1)")
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--rest", type=Path, required=True, help="output: the records of the other folds")
    parser.add_argument("--held", type=Path, required=True, help="output: the records of the held-out fold")
    args = parser.parse_args(argv)
    if not 0 <= args.fold < args.folds:
        raise SystemExit(f"error: --fold must be from 0 to {args.folds - 1}, got {args.fold}")

    from spacy_angel.fileio import atomic_write_bytes
    from spacy_angel.types import Mention
    from training.stages.crossfit import fold_unit, unit_folds

    try:
        raw = args.train.read_bytes()
    except OSError as err:
        raise SystemExit(f"error: cannot read {args.train}: {err}")
    try:  # decoded as the corpus reader does: UTF-8, else latin-1 for the whole file
        raw.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        encoding = "latin-1"
    lines: List[bytes] = [line + b"\n" for line in raw.split(b"\n")]
    lines[-1] = lines[-1][:-1]  # the last piece had no newline after it
    mentions: List[Optional[Mention]] = []
    for lineno, line in enumerate(lines, start=1):
        text = line.decode(encoding)
        if not text.strip():
            mentions.append(None)
            continue
        cols = text.rstrip("\r\n").split("\t")
        if len(cols) != 3 or not cols[2].strip():
            raise SystemExit(f"error: {args.train}, line {lineno}: expected conceptID<TAB>name<TAB>mention")
        mentions.append(Mention.bare(cols[2].strip(), [cols[0].strip()]))
    present = [m for m in mentions if m is not None]
    try:
        fold_of = unit_folds(present, args.folds, args.fold_seed, "surface")
    except ValueError as err:
        raise SystemExit(f"error: {args.train}: {err}")
    held: List[bytes] = []
    rest: List[bytes] = []
    for line, m in zip(lines, mentions):
        if m is not None:  # blank lines go to neither side, as the corpus reader skips them
            (held if fold_of[fold_unit(m, "surface")] == args.fold else rest).append(line)
    atomic_write_bytes(args.rest, b"".join(rest))
    atomic_write_bytes(args.held, b"".join(held))
    held_texts = sum(1 for g in fold_of.values() if g == args.fold)
    print(json.dumps({"texts": len(fold_of), "held_texts": held_texts, "held_records": len(held), "rest_records": len(rest)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
