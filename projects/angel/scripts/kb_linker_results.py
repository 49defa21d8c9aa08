"""Collect ``train kb-linker`` reports into docs/results/kb-linker.json and the table of docs/kb-linker.md.

Every figure is the command's own report (``OUTPUT/kb-linker.json``: held-out synonym test Acc@1/5 of
TF-IDF, beam, the dense name encoder and hybrid, n, build seconds, peak RSS), with the command line that wrote it; nothing is
typed by hand.

Usage: python scripts/kb_linker_results.py NAME=OUTPUT[=COMMAND] ... --json RESULTS.json [--markdown TABLE.md]
(COMMAND: only for reports written before the command line was recorded in them)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from report import read_json  # the project's JSON reader with file-naming errors (scripts import each other by bare name)
from spacy_angel.fileio import atomic_write_text

REPORT = "kb-linker.json"


def collect(entries: Sequence[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for entry in entries:
        name, _, rest = entry.partition("=")
        output, _, command = rest.partition("=")
        if not name or not output:
            raise SystemExit(f"error: {entry!r}: expected NAME=OUTPUT[=COMMAND]")
        report = read_json(Path(output) / REPORT, "kb-linker report")
        out[name] = {**report, "command": command or report.get("command")}
    return out


def table(results: Dict[str, Any]) -> str:
    rows: List[str] = [
        "| KB | n | TF-IDF Acc@1 | beam Acc@1 | dense encoder Acc@1 | hybrid Acc@1 | hybrid - TF-IDF | hybrid Acc@5 | model | "
        "steps (positive + DPO; encoder) | minutes | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for name, r in results.items():
        dense = f"{100 * r['dense_acc1']:.1f}" if "dense_acc1" in r else "-"
        encoder = f"; {r['steps']['encoder']}" if "encoder" in r["steps"] else ""
        rows.append(
            f"| {name} | {r['n']} | {100 * r['tfidf_acc1']:.1f} | {100 * r['beam_acc1']:.1f} | {dense} | {100 * r['hybrid_acc1']:.1f} | "
            f"{100 * (r['hybrid_acc1'] - r['tfidf_acc1']):+.1f} | {100 * r['hybrid_acc5']:.1f} | {r['model']} | "
            f"{r['steps']['positive']} + {r['steps']['dpo']}{encoder} | {r['seconds'] / 60:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", nargs="+", help="NAME=OUTPUT[=COMMAND]")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    results = collect(args.entries)
    atomic_write_text(args.json, json.dumps(results, indent=1) + "\n")
    if args.markdown is not None:
        atomic_write_text(args.markdown, table(results))
    print(table(results))


if __name__ == "__main__":
    main()
