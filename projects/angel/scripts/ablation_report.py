"""Collect ablation rows into one results file (e.g. docs/results/ncbi-cpu-ablations.json).

Each row is one trained model, read from the files its commands wrote (nothing typed by hand):
the dev Acc@1 that selected its checkpoint (``training_log.json``: ``best_metric``), its test
report (``train evaluate``) and its paired comparison with the chosen recipe (``train compare
ROW CHOSEN``, so ``diff`` is row - chosen), plus the mining stats of its pairs when given.

The spec is JSON: ``{"protocol": str, "chosen": NAME, "rows": {NAME: {"what": str, "model": DIR,
"test_report": PATH, "compare": PATH | null, "pairs_stats": PATH | null, "commands": [str, ...],
"also_compare": {LABEL: PATH} (optional: other ``train compare ROW X`` outputs, as ``test_diff_LABEL``,
with the row's accuracy in that comparison as ``test_acc1_LABEL``, e.g. ROW's hybrid-mode report)}}}``.

Usage: python scripts/ablation_report.py SPEC.json --output RESULTS.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from report import read_json  # the project's JSON reader with file-naming errors (scripts import each other by bare name)
from spacy_angel.fileio import atomic_write_text


def row_fields(name: str, row: Dict[str, Any]) -> Dict[str, Any]:
    for key in ("model", "test_report", "commands"):
        if key not in row:
            raise SystemExit(f"error: row {name!r}: field {key} missing")
    log = read_json(Path(row["model"]) / "training_log.json", f"row {name!r}: training log")
    summary = read_json(Path(row["test_report"]), f"row {name!r}: test report").get("summary") or {}
    if "acc@1" not in summary or "best_metric" not in log:
        raise SystemExit(f"error: row {name!r}: no test acc@1 or no dev best_metric in its files")
    out: Dict[str, Any] = {
        "what": row.get("what", ""),
        "dev_acc1": log["best_metric"],
        "dev_best_checkpoint": log.get("best_checkpoint"),
        "dev_acc1_by_step": {str(d["step"]): d["eval_dev_acc1"] for d in log.get("dev", []) if "eval_dev_acc1" in d},
        "train_steps": log.get("global_step"),
        "train_pairs": log.get("num_pairs"),
        "test_acc1": summary["acc@1"],
        "test_acc5": summary.get("acc@5"),
        "test_n": summary.get("n"),
    }
    if row.get("compare"):
        cmp = read_json(Path(row["compare"]), f"row {name!r}: comparison")
        for key in ("diff", "diff_ci95", "p_value", "acc_b"):
            if key not in cmp:
                raise SystemExit(f"error: {row['compare']}: field {key} missing (not a `train compare ROW CHOSEN` output?)")
        out.update(
            test_diff_vs_chosen=cmp["diff"], test_diff_vs_chosen_ci95=cmp["diff_ci95"], test_diff_p=cmp["p_value"],
            only_row_correct=cmp.get("a_only_correct"), only_chosen_correct=cmp.get("b_only_correct"),
        )
    for label, path in (row.get("also_compare") or {}).items():  # e.g. {"vs_positive": `train compare ROW POSITIVE`}
        cmp = read_json(Path(path), f"row {name!r}: comparison {label}")
        out[f"test_diff_{label}"], out[f"test_diff_{label}_ci95"], out[f"test_diff_{label}_p"] = cmp["diff"], cmp["diff_ci95"], cmp["p_value"]
        if "acc_a" in cmp:  # the row's own accuracy in that comparison (e.g. in hybrid mode)
            out[f"test_acc1_{label}"] = cmp["acc_a"]
    if row.get("pairs_stats"):
        stats = read_json(Path(row["pairs_stats"]), f"row {name!r}: pairs stats")
        out["mining"] = {k: stats.get(k) for k in ("strategy", "top_k", "pairs", "mentions_with_pairs", "acc@1", "pairs_by_kind", "folds")}
    out["commands"] = list(row["commands"])
    return out


def build(spec: Dict[str, Any]) -> Dict[str, Any]:
    rows = spec.get("rows") or {}
    if spec.get("chosen") not in rows:
        raise SystemExit(f"error: the chosen row {spec.get('chosen')!r} is not among the rows")
    result = {"protocol": spec.get("protocol", ""), "chosen": spec["chosen"], "rows": {}}
    for name, row in rows.items():
        result["rows"][name] = row_fields(name, row)
    chosen = result["rows"][spec["chosen"]]
    for name, row in result["rows"].items():
        if "test_diff_vs_chosen" in row and abs(row["test_acc1"] - row["test_diff_vs_chosen"] - chosen["test_acc1"]) > 1e-9:
            raise SystemExit(f"error: row {name!r}: its comparison is not against the chosen row's test report")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    result = build(read_json(args.spec, "spec"))
    atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
    for name, row in result["rows"].items():
        diff = row.get("test_diff_vs_chosen")
        ci = row.get("test_diff_vs_chosen_ci95")
        tail = f", test - chosen {100 * diff:+.2f} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if diff is not None else ""
        print(f"{name}: dev {100 * row['dev_acc1']:.2f}, test {100 * row['test_acc1']:.2f}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
