"""KB pre-training, negative stage: preference pairs from the TF-IDF negatives of pre-training data.

Why: ``train pretrain-data`` stores, with every example, the TF-IDF-closest names of *other*
concepts (``rejected``). Pairing each example's target (chosen) with its first ``--negatives``
rejected names gives DPO pairs for negative-aware pre-training without decoding the whole KB
with the model first (ANGEL mines the model's own top-k instead; that is ``train mine`` on a
corpus). Pairs keep the pre-formatted ``source``/``prompt`` so the encoder sees the same text
as in the positive stage.

Usage: python scripts/pretrain_pairs.py PRETRAIN_DIR_OR_JSONL --output PAIRS.jsonl
       [--negatives 1] [--max-pairs N] [--seed 0]
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import List, Optional, Sequence


def build_pairs(records, negatives: int = 1) -> List:
    """One pair per (record, rejected name) for the first ``negatives`` rejected names."""
    from spacy_angel.seq2seq.prompt import mention_of_prompt
    from training.examples.pair_files import PreferencePair

    pairs = []
    for rec in records:
        mention = mention_of_prompt(rec["prompt"])
        for rejected in rec.get("rejected", [])[:negatives]:
            if rejected == rec["target"]:
                continue
            pairs.append(
                PreferencePair(
                    doc_id=str(rec.get("kb_id", "")), text=mention, start=0, end=len(mention),
                    gold_ids=(rec["kb_id"],) if rec.get("kb_id") else (), chosen=rec["target"], rejected=rejected,
                    source=rec["source"], prompt=rec["prompt"],
                )
            )
    return pairs


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pretrain_data", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--negatives", type=int, default=1, help="rejected names per example")
    parser.add_argument("--max-pairs", type=int, default=None, help="random sample of at most N pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from training.examples.pair_files import write_pairs
    from spacy_angel.errors import TrainingDataError
    from training.stages.positive import read_pretraining_jsonl

    try:
        records = [rec for _, _, rec in read_pretraining_jsonl(args.pretrain_data)]
    except TrainingDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    pairs = build_pairs(records, args.negatives)
    if args.max_pairs is not None and len(pairs) > args.max_pairs:
        pairs = random.Random(args.seed).sample(pairs, args.max_pairs)
    if not pairs:
        print(f"error: no pairs: the examples in {args.pretrain_data} carry no 'rejected' names", file=sys.stderr)
        return 1
    write_pairs(pairs, args.output)
    print(f"{len(pairs)} pairs from {len(records)} pre-training examples -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
