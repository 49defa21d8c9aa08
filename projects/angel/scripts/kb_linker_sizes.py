"""The sizes table of docs/kb-linker.md: time and peak memory of ``train kb-linker`` builds of several
KB sizes, read from each build's own ``OUTPUT/build/metrics.json`` and ``OUTPUT/kb-linker.json``.

Usage: python scripts/kb_linker_sizes.py "LABEL=OUTPUT" ...
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from report import read_json  # the project's JSON reader with file-naming errors (scripts import each other by bare name)


def row(label: str, output: Path) -> str:
    metrics = read_json(output / "build" / "metrics.json", "kb-linker metrics")
    report = read_json(output / "kb-linker.json", "kb-linker report")
    seconds = metrics["stage_seconds"]
    slowest = max(seconds, key=seconds.get)
    steps = report["steps"]
    return (f"| {label} | {metrics['stages']['kb']['names']:,} | {metrics['torch_threads']} | "
            f"{steps['positive']} + {steps['dpo']}; {steps.get('encoder', '-')} | {metrics['build_seconds'] / 60:.1f} | "
            f"{slowest} ({seconds[slowest] / 60:.1f}) | {metrics['peak_rss_mb']:.0f} | {report['n']} | "
            f"{100 * report['tfidf_acc1']:.1f} | {100 * report['hybrid_acc1']:.1f} |")


def main(argv: Sequence[str]) -> None:
    print("| KB | names | threads | steps (positive + DPO; encoder) | build min | slowest stage (min) | peak RSS MB | n test | TF-IDF | hybrid |")
    print("|---|---:|---:|---|---:|---|---:|---:|---:|---:|")
    for entry in argv:
        label, _, output = entry.rpartition("=")
        if not label or not output:
            raise SystemExit(f"error: {entry!r}: expected LABEL=OUTPUT")
        print(row(label, Path(output)))


if __name__ == "__main__":
    main(sys.argv[1:])
