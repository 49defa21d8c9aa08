"""Speed/accuracy trade-offs chosen on NCBI-disease DEV only: int8 and the context window.

Two tables, each measured side by side in one run (same model, KB, machine, interleaved):

* ``dtype``: float32 vs int8 (dynamic quantisation) in beam and hybrid mode on the paper
  protocol (BioSyn-processed dev mentions, no context, the dev KB = MEDIC + train names);
* ``beams``: beam size 1, 3, 5 x TF-IDF names 10, 20 in hybrid mode, paper protocol;
* ``context``: encoder context of 0, 8, 16, 32 words on each side, on raw PubTator dev mentions
  in their abstracts (the raw-mention protocol: it is where context exists), against the same KB.

Acc@1 / Acc@5 and mentions/s (median of ``--repeats``) per row; never the test set.

    .venv/bin/python bench/dev_tradeoffs.py --model projects/angel/training/cpu/angel \\
        --kb projects/angel/training/cpu/kb_dev --json docs/results/dev_tradeoffs.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, machine, median, write_json_atomic  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="trained model directory (with its fusion.json)")
    p.add_argument("--kb", type=Path, required=True, help="dev KB directory (kb build output)")
    p.add_argument("--paper-dev", type=Path, default=DATA / "biosyn" / "ncbi-disease" / "processed_dev",
                   help="dev mentions without context (any corpus format training reads, e.g. AskAPatient)")
    p.add_argument("--raw-dev", type=Path, default=DATA / "ncbi-disease" / "NCBIdevelopset_corpus.txt")
    p.add_argument("--dtypes", default="float32,int8")
    p.add_argument("--modes", default="beam,hybrid")
    p.add_argument("--contexts", default="0,8,16,32", help="context words per side for the raw-mention table ('' = skip)")
    p.add_argument("--beams", default="1,3,5", help="beam sizes for the hybrid-mode table")
    p.add_argument("--candidates", default="10,20", help="TF-IDF names per mention for the hybrid-mode table")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def load_mentions(path: Path, kb) -> List[Any]:
    from training.data.corpora import read_corpus
    from training.data.preprocess import preprocess

    mentions, _ = preprocess(read_corpus(path), lowercase=True, expand_abbreviations=True, kb=kb)
    return list(mentions)


def measure(linkers: Dict[str, Any], mentions: Sequence[Any], modes: Sequence[str], repeats: int, kb) -> Dict[str, Any]:
    """Acc@1/5 and median mentions/s for every (linker, mode), repeats interleaved across rows."""
    from training.evaluation.metrics import accuracy_at_k

    gold = [m.gold_ids for m in mentions]
    times: Dict[str, List[float]] = {}
    rows: Dict[str, Any] = {}
    for name, linker in linkers.items():
        linker.link(mentions[:4], top_k=5)  # warm-up: lazy index load, first allocations
    for _ in range(repeats):
        for name, linker in linkers.items():
            for mode in modes:
                key = f"{name}/{mode}"
                linker.clear_cache()
                t0 = time.perf_counter()
                predictions = linker.link(mentions, top_k=5, mode=mode)
                times.setdefault(key, []).append(time.perf_counter() - t0)
                rows[key] = accuracy_at_k(predictions, gold, ks=(1, 5), kb=kb)
    for key, seconds in times.items():
        rows[key].update(median_s=median(seconds), mentions_per_s=len(mentions) / median(seconds), seconds=seconds)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    from spacy_angel.kb.readers import load_kb
    from spacy_angel.linking.linker import AngelLinker

    if args.threads:
        torch.set_num_threads(args.threads)
    kb = load_kb(args.kb)
    modes = [m for m in args.modes.split(",") if m]
    report: Dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                              "torch_threads": torch.get_num_threads()}

    def linker(dtype: str = "float32", context: int = 0, beams: int = 5, candidates: int = 20) -> AngelLinker:
        return AngelLinker.from_pretrained(args.model, args.kb, device="cpu", dtype=dtype, context_window=context,
                                           batch_size=args.batch_size, num_beams=beams, num_candidates=candidates)

    paper = load_mentions(args.paper_dev, kb)
    report["dtype"] = {"protocol": f"mentions without context ({args.paper_dev})", "mentions": len(paper)}
    report["dtype"].update(measure({d: linker(dtype=d) for d in args.dtypes.split(",") if d}, paper, modes, args.repeats, kb))
    beams = [int(b) for b in args.beams.split(",") if b.strip()]
    report["beams"] = {"protocol": report["dtype"]["protocol"], "mentions": len(paper)}
    grid = {f"beams{b}_candidates{c}": linker(beams=b, candidates=int(c)) for b in beams for c in args.candidates.split(",") if c}
    report["beams"].update(measure(grid, paper, ["hybrid"], args.repeats, kb))
    contexts = [int(c) for c in args.contexts.split(",") if c.strip()]
    if contexts:
        raw = load_mentions(args.raw_dev, kb)
        report["context"] = {"protocol": "raw mentions (NCBI-disease dev PubTator abstracts, with context)", "mentions": len(raw)}
        report["context"].update(measure({f"context{c}": linker(context=c) for c in contexts}, raw, modes, args.repeats, kb))
    print_report(report)
    if args.json:
        write_json_atomic(args.json, report)
    return 0


def print_report(report: Dict[str, Any]) -> None:
    m = report["machine"]
    print(f"machine: {m.get('Model name', '?')}, {m.get('cpus')} CPUs, torch {m['torch']} ({report['torch_threads']} threads)")
    for table in ("dtype", "beams", "context"):
        if table not in report:
            continue
        rows = report[table]
        print(f"\n{table}: {rows['protocol']}, {rows['mentions']} mentions")
        print("row                             acc@1   acc@5   mentions/s")
        for key, r in rows.items():
            if isinstance(r, dict):
                print(f"{key:<31} {100 * r['acc@1']:6.2f}  {100 * r['acc@5']:6.2f}  {r['mentions_per_s']:10.1f}")


if __name__ == "__main__":
    sys.exit(main())
