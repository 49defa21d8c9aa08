"""KB pre-training, positive stage: teach a model the KB's synonyms with no corpus at all.

Why a script: ``spacy-angel train positive`` takes a training corpus, while pre-training (ANGEL
Sec. 3.3) learns only from ``train pretrain-data`` examples (and, optionally, every KB name as a
mention). This calls the same :func:`training.positive.train_positive` with no mentions.

Usage: python scripts/pretrain_positive.py MODEL KB_DIR PRETRAIN_DIR --output OUT
       [--epochs 1] [--max-steps -1] [--learning-rate 3e-4] [--batch-size 32] [--warmup-ratio 0.02]
       [--label-smoothing 0.1] [--max-minutes M] [--kb-names-as-mentions] [--lr-scheduler linear]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="starting model directory or hub id")
    parser.add_argument("kb", type=Path, help="KB directory (spacy-angel kb build)")
    parser.add_argument("pretrain_data", type=Path, help="directory or JSONL from `spacy-angel train pretrain-data`")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup-ratio", type=float, default=0.02)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--lr-scheduler", default="linear")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--kb-names-as-mentions", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.kb.is_dir():
        print(f"error: KB directory {args.kb} does not exist", file=sys.stderr)
        return 1
    if not args.pretrain_data.exists():
        print(f"error: pre-training data {args.pretrain_data} does not exist", file=sys.stderr)
        return 1
    import logging

    from spacy_angel.kb import KnowledgeBase
    from training.positive import TrainingDataError, train_positive

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        out = train_positive(
            args.model, KnowledgeBase.from_disk(args.kb), [], args.output,
            pretrain_data=args.pretrain_data, kb_names_as_mentions=args.kb_names_as_mentions,
            epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.learning_rate,
            batch_size=args.batch_size, warmup_ratio=args.warmup_ratio, label_smoothing=args.label_smoothing,
            lr_scheduler=args.lr_scheduler, max_minutes=args.max_minutes, seed=args.seed,
        )
    except (TrainingDataError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    log = json.loads((out / "training_log.json").read_text(encoding="utf-8"))
    print(f"pre-trained model written to {out}: {log['global_step']} steps, {log['wall_time_s']}s, peak RSS {log['peak_rss_mb']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
