"""Copy a trained model directory without its hybrid extras (``fusion.json``, ``name_encoder/``).

Why: a project command must not write into another command's outputs (weasel would rerun or skip
the wrong steps). ``cpu-raw-encoder`` gives the ANGEL model a name encoder for raw mentions, so it
trains into a copy; the copy replaces DST whole (temp + rename), and SRC is never changed.

Usage: python scripts/copy_model.py SRC DST
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

from spacy_angel.fileio import atomic_directory, check_output_directory

#: What a model gains after training; the copy leaves it out so the new owner writes its own.
LEFT_OUT = ("fusion.json", "name_encoder")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="model directory (e.g. training/cpu/angel)")
    parser.add_argument("dst", type=Path, help="directory the copy replaces")
    args = parser.parse_args(argv)
    if not (args.src / "config.json").is_file():
        print(f"error: {args.src} is not a model directory (no config.json)", file=sys.stderr)
        return 1
    if args.dst.resolve() == args.src.resolve():
        print(f"error: {args.dst} is the source itself", file=sys.stderr)
        return 1
    try:  # a non-empty DST that is not a model folder is a user's: never replaced
        check_output_directory(args.dst, markers=("config.json",), option="DST")
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with atomic_directory(args.dst) as tmp:
        top = str(args.src)
        shutil.copytree(args.src, tmp, dirs_exist_ok=True, ignore=lambda d, names: [n for n in names if n in LEFT_OUT] if d == top else [])
    print(f"copied {args.src} to {args.dst} (without {', '.join(LEFT_OUT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
