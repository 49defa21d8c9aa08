"""docs/results.md's ablation table quotes docs/results/ncbi-cpu-ablations.json (scripts/ablation_report.py)."""
import json
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


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


def _pct(x) -> str:
    return f"{100 * x:.2f}"


def _diff(row, label) -> str:
    lo, hi = row[f"test_diff_{label}_ci95"]
    return f"{100 * row[f'test_diff_{label}']:+.2f} ({100 * lo:+.2f} to {100 * hi:+.2f})"


def test_askapatient_rows_quote_their_results_file():
    """Lines `| what | `aap:KEY` | dev | test beam | vs own positive | test hybrid | vs own positive, hybrid |`."""
    path = DOCS / "results" / "aap-cpu-ablations.json"
    if not path.exists():
        pytest.skip("no AskAPatient ablation results file yet")
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    quoted = {}
    for line in (DOCS / "results.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| [^|]+ \| `aap:(\w+)` \|", line)
        if m:
            quoted[m.group(1)] = [c.strip() for c in line.strip().strip("|").split("|")]
    assert set(quoted) == set(rows), f"JSON rows {sorted(rows)} vs table rows {sorted(quoted)}"
    for key, cells in quoted.items():
        row = rows[key]
        assert cells[2:4] == [_pct(row["dev_acc1"]), _pct(row["test_acc1"])], (key, cells)
        if "test_diff_vs_own_positive" in row:  # an ANGEL model: its gains over its own positive model
            assert cells[4] == _diff(row, "vs_own_positive"), (key, cells)
            assert cells[5] == _pct(row["test_acc1_hybrid_vs_own_positive"]), (key, cells)
            assert cells[6] == _diff(row, "hybrid_vs_own_positive"), (key, cells)
        else:  # a positive model: its hybrid accuracy only
            assert cells[4] == "" and cells[5] == _pct(row["test_acc1_hybrid"]) and cells[6] == "", (key, cells)
