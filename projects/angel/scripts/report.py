"""Collect one workflow's numbers into a single results file (e.g. docs/results/ncbi-cpu.json).

Why: the evaluation reports, the end-to-end scores and the per-stage time/memory records are
written by different commands; the results file is what the README quotes, so it is built
only from those files (nothing typed by hand). Keys: ``tfidf_acc1/5``, ``positive_acc1/5``,
``angel_acc1/5`` (Acc@k on the test mentions, model alone: beam mode), ``hybrid_positive_acc1/5``
and ``hybrid_acc1/5`` (hybrid mode with the positive / ANGEL model), ``raw_tfidf/raw_beam/raw_hybrid_acc1/5``
(the same on another protocol: raw PubTator test mentions against CTD MEDIC 2017), ``e2e_precision/recall/f1``
(+ ``ner_*``), ``document_switches`` (the linker's document-level switches chosen on dev, with
every combination's dev e2e F1), ``ner_vote`` (one NER or a vote of seeds, chosen on dev, with every
row's dev entity F1), the 95% bootstrap interval of each Acc@1, paired-bootstrap intervals of
differences (``angel_vs_positive_ci``, ``hybrid_vs_tfidf_ci``, ``hybrid_angel_vs_positive_ci``: B - A
of a ``train compare A B`` output; ``--compare POSITIVE_VS_ANGEL`` writes ``angel_vs_positive*``
too, plus the McNemar p and the counts of mentions only one system gets right), per-bin Acc@1 of
every system (``bins``), and ``stages`` (seconds, peak RSS MiB per stage: the records whose name
starts with ``--prefix`` and with none of the ``--exclude-prefix`` values, e.g. ``cpu-`` but not
``cpu-aap-``).

Usage: python scripts/report.py --tfidf T.json --positive P.json --angel A.json [--hybrid H.json]
       [--hybrid-positive HP.json] [--raw-tfidf RT.json] [--raw-beam RB.json] [--raw-hybrid RH.json] [--e2e E.json] [--compare POS_VS_ANGEL.json]
       [--diff NAME=COMPARE.json ...] [--bins-plot PNG] [--stages metrics/stages] [--prefix cpu-]
       [--exclude-prefix cpu-aap- ...] --output RESULTS.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from spacy_angel.fileio import atomic_write_text


def read_json(path: Path, what: str) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"error: {what} {path} does not exist (run the stage that writes it first)")
    except json.JSONDecodeError as err:
        raise SystemExit(f"error: {path}:{err.lineno}: not valid JSON ({err.msg})")


def accuracy_fields(name: str, report: Dict[str, Any], path: Path) -> Dict[str, Any]:
    summary = report.get("summary")
    if not isinstance(summary, dict) or "acc@1" not in summary:
        raise SystemExit(f"error: {path}: field summary.acc@1 missing (not a `train evaluate` report?)")
    out = {f"{name}_acc1": summary["acc@1"], f"{name}_acc5": summary.get("acc@5")}
    if "acc@1_ci95" in summary:
        out[f"{name}_acc1_ci95"] = summary["acc@1_ci95"]
    out[f"{name}_n"] = summary.get("n")
    return out


def stage_records(directory: Path, prefix: str = "", exclude: Sequence[str] = ()) -> Dict[str, Dict[str, Any]]:
    """Stage records named ``prefix...`` but not ``exclude[i]...`` (``cpu-`` also matches ``cpu-aap-``)."""
    out: Dict[str, Dict[str, Any]] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob(f"{prefix}*.json")):
        rec = read_json(path, "stage record")
        name = rec.get("stage", path.stem)
        if not str(name).startswith(prefix) or any(str(name).startswith(x) for x in exclude if x):
            continue
        out[name] = {
            "seconds": rec.get("seconds"),
            "peak_rss_mb": rec.get("peak_rss_mb"),
            "returncode": rec.get("returncode"),
        }
    return out


def diff_fields(name: str, cmp: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """``train compare A B`` states A - B; results state B - A (the newer system minus the older)."""
    for key in ("diff", "diff_ci95", "p_value"):
        if key not in cmp:
            raise SystemExit(f"error: {path}: field {key} missing (not a `train compare` output?)")
    return {f"{name}": -cmp["diff"], f"{name}_ci": sorted(-x for x in cmp["diff_ci95"]), f"{name}_p": cmp["p_value"]}


SYSTEMS = ("tfidf", "positive", "angel", "hybrid_positive", "hybrid", "raw_tfidf", "raw_beam", "raw_hybrid")


def build(args: argparse.Namespace) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    reports: Dict[str, Dict[str, Any]] = {}
    for name in SYSTEMS:
        path = getattr(args, name)
        if path is None:
            continue
        reports[name] = read_json(path, f"{name} report")
        result.update(accuracy_fields(name, reports[name], path))
    bins = {name: r["summary"]["bins"] for name, r in reports.items() if "bins" in r.get("summary", {})}
    if bins:
        result["bins"] = bins
        result["bin_labels"] = next(iter(reports.values()))["summary"].get("bin_labels")
    diffs = [(spec, *spec.partition("=")[::2]) for spec in args.diff or []]
    if args.compare is not None:
        diffs.append((f"--compare {args.compare}", "angel_vs_positive", str(args.compare)))
    for spec, name, raw in diffs:
        if not raw:
            raise SystemExit(f"error: --diff {spec!r}: expected NAME=COMPARE.json")
        fields = diff_fields(name, read_json(Path(raw), "paired comparison"), Path(raw))
        clash = [k for k, v in fields.items() if k in result and result[k] != v]
        if clash:
            raise SystemExit(f"error: {spec}: {', '.join(clash)} already set from another comparison")
        result.update(fields)
    if args.bins_plot is not None:
        from training.evaluation.metrics import plot_bins

        shown = {name: reports[name] for name in ("tfidf", "angel", "hybrid") if name in reports}
        plot_bins(shown, args.bins_plot, title="Acc@1 by mention-gold TF-IDF similarity (test)")
    if args.e2e is not None:
        e2e = read_json(args.e2e, "end-to-end scores")
        for key in ("precision", "recall", "f1"):
            result[f"e2e_{key}"] = e2e["e2e"][key]
            result[f"ner_{key}"] = e2e["ner"][key]
        result["linking_accuracy_on_found_spans"] = e2e.get("linking_on_found", {}).get("accuracy")
        for key, value in (e2e.get("nel") or {}).items():  # spaCy's Scorer.score_links via the component
            result[key] = value
    if args.document_switches is not None:
        sweep = read_json(args.document_switches, "document switches")
        if "chosen" not in sweep or "rows" not in sweep:
            raise SystemExit(f"error: {args.document_switches}: fields chosen/rows missing (not a document_switches.py output?)")
        result["document_switches"] = {
            "chosen": sweep["chosen"], "split": str(sweep.get("gold")),
            "dev_e2e_f1": {",".join(k for k, on in r["switches"].items() if on) or "none": r["e2e"]["f1"] for r in sweep["rows"]},
        }
    if args.ner_vote is not None:
        vote = read_json(args.ner_vote, "NER vote choice")
        if "chosen" not in vote or "rows" not in vote:
            raise SystemExit(f"error: {args.ner_vote}: fields chosen/rows missing (not a ner_vote.py output?)")
        def row_name(row: Dict[str, Any]) -> str:
            if "model" in row:
                return f"model {row['model']} alone"
            return "model 0 alone" if row["min_votes"] is None else f"min_votes {row['min_votes']}"

        result["ner_vote"] = {"chosen": vote["chosen"], "split": str(vote.get("gold")), "models": vote.get("models"),
                              "dev_ner_f1": {row_name(r): r["ents"]["f"] for r in vote["rows"]}}
    if args.compare is not None:
        cmp = read_json(args.compare, "paired comparison")
        for key in ("mcnemar_p", "a_only_correct", "b_only_correct"):
            if key not in cmp:
                raise SystemExit(f"error: {args.compare}: field {key} missing (not a `train compare` output?)")
        # `train compare POSITIVE ANGEL`: the difference itself is angel_vs_positive* (above)
        result["angel_vs_positive_p_mcnemar"] = cmp["mcnemar_p"]
        result["only_positive_correct"] = cmp["a_only_correct"]
        result["only_angel_correct"] = cmp["b_only_correct"]
    stages = stage_records(args.stages, args.prefix, args.exclude_prefix or ())
    result["stages"] = stages
    result["total_seconds"] = round(sum(s["seconds"] or 0 for s in stages.values()), 1)
    result["peak_rss_mb"] = max((s["peak_rss_mb"] or 0 for s in stages.values()), default=None)
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    result["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tfidf", type=Path, required=True)
    parser.add_argument("--positive", type=Path, required=True)
    parser.add_argument("--angel", type=Path, required=True)
    parser.add_argument("--hybrid", type=Path, help="`train evaluate --mode hybrid` report of the ANGEL model")
    parser.add_argument("--hybrid-positive", type=Path, help="the same for the positive-only model")
    parser.add_argument("--diff", action="append", help="NAME=COMPARE.json: a paired difference (B - A) under NAME")
    parser.add_argument("--bins-plot", type=Path, help="PNG: Acc@1 per similarity bin, TF-IDF vs ANGEL vs hybrid")
    parser.add_argument("--raw-tfidf", type=Path, help="`train evaluate tfidf` report on raw mentions (another protocol: raw_tfidf_*)")
    parser.add_argument("--raw-beam", type=Path, help="the same, beam mode (raw_beam_*)")
    parser.add_argument("--raw-hybrid", type=Path, help="the same, hybrid mode (raw_hybrid_*)")
    parser.add_argument("--e2e", type=Path)
    parser.add_argument("--document-switches", type=Path, help="document_switches.py output: the chosen switches and each combination's dev e2e F1")
    parser.add_argument("--ner-vote", type=Path, help="ner_vote.py output: one NER or a vote of seeds, each row's dev entity F1")
    parser.add_argument("--compare", type=Path, help="`train compare POSITIVE ANGEL` output (paired test)")
    parser.add_argument("--stages", type=Path, default=Path("metrics/stages"))
    parser.add_argument("--prefix", default="", help="only stage records whose name starts with this")
    parser.add_argument("--exclude-prefix", action="append", help="leave out stage records whose name starts with this")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    result = build(args)
    atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("stages", "machine")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
