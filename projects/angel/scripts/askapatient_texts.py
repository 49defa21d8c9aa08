"""Write the mention column of an AskAPatient split as UTF-8 text, one mention a line.

Why: ``spacy-angel init-model --corpus`` fits the tokenizer on plain UTF-8 text, and the
AskAPatient files are not all UTF-8; :func:`training.data.corpora.read_askapatient` already knows
how to read them, so this reuses it instead of a second parser.

Usage: python scripts/askapatient_texts.py AskAPatient.fold-0.train.txt --output texts.txt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from spacy_angel.fileio import atomic_write_text
from training.data.corpora import read_askapatient


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    mentions = read_askapatient(args.split)
    atomic_write_text(args.output, "".join(m.surface + "\n" for m in mentions))
    print(f"{len(mentions)} mentions -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
