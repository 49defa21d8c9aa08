"""KB pre-training, positive stage: teach a model the KB's synonyms with no corpus at all.

Why a script: ``spacy-angel train positive`` takes a training corpus, while pre-training (ANGEL
Sec. 3.3) learns only from ``train pretrain-data`` examples (and, optionally, every KB name as a
mention). This calls the same :func:`training.stages.positive.train_positive` with no mentions.

Usage: python scripts/pretrain_positive.py MODEL KB_DIR PRETRAIN_DIR --output OUT
       [--epochs] [--max-steps] [--learning-rate] [--batch-size] [--warmup-ratio] [--label-smoothing]
       [--max-minutes] [--kb-names-as-mentions] [--lr-scheduler] [--seed]
(defaults: training.settings.PretrainSettings)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from training.settings import PretrainSettings, add_arguments, from_namespace

_OPTIONS = (
    "epochs", "max_steps", "learning_rate", "batch_size", "warmup_ratio", "label_smoothing", "lr_scheduler",
    "max_minutes", "kb_names_as_mentions", "seed",
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="starting model directory or hub id")
    parser.add_argument("kb", type=Path, help="KB directory (spacy-angel kb build)")
    parser.add_argument("pretrain_data", type=Path, help="directory or JSONL from `spacy-angel train pretrain-data`")
    parser.add_argument("--output", type=Path, required=True)
    add_arguments(parser, PretrainSettings, only=_OPTIONS)  # defaults and help: training/settings.py
    args = parser.parse_args(argv)
    if not args.kb.is_dir():
        print(f"error: KB directory {args.kb} does not exist", file=sys.stderr)
        return 1
    if not args.pretrain_data.exists():
        print(f"error: pre-training data {args.pretrain_data} does not exist", file=sys.stderr)
        return 1
    import logging

    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.errors import TrainingDataError
    from training.stages.positive import train_positive

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        settings = from_namespace(PretrainSettings, args, pretrain_data=str(args.pretrain_data))
        out = train_positive(args.model, KnowledgeBase.from_disk(args.kb), [], args.output, settings)
    except (TrainingDataError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    log = json.loads((out / "training_log.json").read_text(encoding="utf-8"))
    print(f"pre-trained model written to {out}: {log['global_step']} steps, {log['wall_time_s']}s, peak RSS {log['peak_rss_mb']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
