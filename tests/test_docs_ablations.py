"""docs/results.md's ablation table quotes docs/results/ncbi-cpu-ablations.json (scripts/ablation_report.py)."""
import json
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_ablation_rows_quote_the_results_file():
    path = DOCS / "results" / "ncbi-cpu-ablations.json"
    if not path.exists():
        pytest.skip("no ablation results file yet")
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    text = (DOCS / "results.md").read_text(encoding="utf-8")
    quoted = {}
    for line in text.splitlines():
        m = re.match(r"\| .*\(`(\w+)`\) \|", line)
        if m and m.group(1) in rows:
            quoted[m.group(1)] = line
    assert set(quoted) == set(rows), f"rows in the JSON but not in the table: {sorted(set(rows) - set(quoted))}"
    for key, line in quoted.items():
        row = rows[key]
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[3] == f"{100 * row['dev_acc1']:.2f}" and cells[4] == f"{100 * row['test_acc1']:.2f}", line
        if "test_diff_vs_chosen" in row:
            lo, hi = row["test_diff_vs_chosen_ci95"]
            assert cells[5] == f"{100 * row['test_diff_vs_chosen']:+.2f} ({100 * lo:+.2f} to {100 * hi:+.2f})", line
