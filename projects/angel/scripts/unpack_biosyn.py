"""Unpack the BioSyn NCBI-disease tarball (an asset) so that ``biosyn/ncbi-disease/processed_test`` exists.

Why: ``spacy project assets`` downloads the archive but weasel does not unpack it, so
``cpu-ncbi`` stopped at ``cpu-build-kb``. A no-op when the folder is already there (a shared,
read-only data copy needs no archive at all). Extraction uses tarfile's ``data`` filter: no
absolute paths, no links out of the target, no device files.

Usage: python scripts/unpack_biosyn.py ASSETS/biosyn/ncbi-disease.tar.gz --into ASSETS/biosyn
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--into", type=Path, required=True)
    args = parser.parse_args(argv)
    target = args.into / "ncbi-disease"
    if (target / "processed_test").is_dir():
        print(f"{target} already unpacked")
        return 0
    if not args.archive.is_file():
        print(f"error: {args.archive} does not exist and {target}/processed_test is missing: run "
              "`spacy project assets` first (or point --vars.data_dir at an unpacked copy)", file=sys.stderr)
        return 1
    args.into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.into, prefix=".unpack-") as tmp:
        with tarfile.open(args.archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        unpacked = Path(tmp) / "ncbi-disease"
        if not (unpacked / "processed_test").is_dir():
            print(f"error: {args.archive} holds no ncbi-disease/processed_test folder", file=sys.stderr)
            return 1
        unpacked.rename(target)  # whole folder or nothing
    print(f"unpacked {args.archive} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
