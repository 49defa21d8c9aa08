"""projects/angel/scripts/ablation_report.py: ablation rows read from the files their commands wrote."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "projects" / "angel" / "scripts"


@pytest.fixture
def rep():
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield importlib.import_module("ablation_report")
    finally:
        sys.path.remove(str(SCRIPTS))


def _row(tmp_path: Path, name: str, dev: float, test: float, chosen_test: float = None):
    model = tmp_path / name
    model.mkdir()
    (model / "training_log.json").write_text(json.dumps({"best_metric": dev, "best_checkpoint": "checkpoint-20", "global_step": 40, "num_pairs": 9,
                                                        "dev": [{"step": 0, "eval_dev_acc1": 0.5}, {"step": 20, "eval_dev_acc1": dev}]}))
    report = tmp_path / f"{name}.json"
    report.write_text(json.dumps({"summary": {"acc@1": test, "acc@5": 0.9, "n": 100}}))
    row = {"what": name, "model": str(model), "test_report": str(report), "commands": [f"train dpo ... {name}"]}
    if chosen_test is not None:
        cmp = tmp_path / f"compare-{name}.json"
        cmp.write_text(json.dumps({"diff": test - chosen_test, "diff_ci95": [-0.02, 0.03], "p_value": 0.4, "acc_b": chosen_test,
                                   "a_only_correct": 3, "b_only_correct": 2}))
        row["compare"] = str(cmp)
    return row


def test_rows_come_from_their_files(rep, tmp_path):
    spec = {"protocol": "paper", "chosen": "dpo", "rows": {"dpo": _row(tmp_path, "dpo", 0.908, 0.862), "simpo": _row(tmp_path, "simpo", 0.90, 0.87, 0.862)}}
    other = tmp_path / "vs-positive.json"
    other.write_text(json.dumps({"diff": 0.01, "diff_ci95": [-0.01, 0.03], "p_value": 0.3, "acc_a": 0.88}))
    spec["rows"]["simpo"]["also_compare"] = {"vs_positive": str(other)}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "out" / "ablations.json"
    assert rep.main([str(tmp_path / "spec.json"), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    simpo = result["rows"]["simpo"]
    assert (simpo["dev_acc1"], simpo["test_acc1"], simpo["train_steps"]) == (0.90, 0.87, 40)
    assert simpo["test_diff_vs_chosen"] == pytest.approx(0.008) and simpo["test_diff_vs_chosen_ci95"] == [-0.02, 0.03]
    assert (simpo["test_diff_vs_positive"], simpo["test_diff_vs_positive_ci95"]) == (0.01, [-0.01, 0.03])
    assert simpo["test_acc1_vs_positive"] == 0.88 and "test_acc1_vs_positive" not in result["rows"]["dpo"]
    assert simpo["dev_acc1_by_step"] == {"0": 0.5, "20": 0.90}
    assert simpo["commands"] == ["train dpo ... simpo"] and "test_diff_vs_chosen" not in result["rows"]["dpo"]


def test_a_comparison_against_another_report_is_refused(rep, tmp_path):
    spec = {"chosen": "dpo", "rows": {"dpo": _row(tmp_path, "dpo", 0.908, 0.862), "cpo": _row(tmp_path, "cpo", 0.9, 0.87, 0.85)}}
    with pytest.raises(SystemExit, match="not against the chosen row"):
        rep.build(spec)
    with pytest.raises(SystemExit, match="chosen row 'x'"):
        rep.build({**spec, "chosen": "x"})
    (Path(spec["rows"]["cpo"]["model"]) / "training_log.json").unlink()
    with pytest.raises(SystemExit, match="training log .* does not exist"):
        rep.build(spec)
