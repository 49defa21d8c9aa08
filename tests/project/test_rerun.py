"""A weasel workflow shaped like projects/angel's train -> fuse -> evaluate runs once, then skips.

The pattern of the fuse fix: ``fuse`` reads the model and writes a file of its own, declared in its
``outputs``; ``evaluate`` lists that file in its ``deps``. Run twice, the second run executes
nothing and leaves every output as it was; delete the last output and only the last command runs.
The old pattern (``fuse`` writing into the model directory, another command's output) is the
control: there the second run trains again. Plain python steps stand in for the real commands
(``spacy-angel`` takes seconds to start); ``test_project_outputs.py`` checks the real project.yml.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict

STEPS = '''\
import json, sys
from pathlib import Path

step, *paths = sys.argv[1:]
if step == "train":  # a model directory
    out = Path(paths[0])
    out.mkdir(exist_ok=True)
    (out / "weights.txt").write_text("0.5\\n")
elif step == "fuse":  # reads the model, writes the fusion weights file it is given (and a report)
    model, out, report = Path(paths[0]), Path(paths[1]), Path(paths[2])
    out.write_text(json.dumps({"model": float((model / "weights.txt").read_text()), "tfidf": 4.9}))
    report.write_text(json.dumps({"dev": 1.0}))
elif step == "evaluate":
    model, fusion, out = (Path(p) for p in paths)
    out.write_text(json.dumps({"acc@1": json.loads(fusion.read_text())["model"]}))
'''

PROJECT = """\
title: "rerun check"
workflows:
  all:
    - train
    - fuse
    - evaluate
commands:
  - name: train
    script:
      - "python steps.py train model"
    deps:
      - "steps.py"
    outputs:
      - "model"
  - name: fuse
    script:
      - "python steps.py fuse model {fusion} fuse-report.json"
    deps:
      - "model"
    outputs:
      - "fuse-report.json"{fusion_output}
  - name: evaluate
    script:
      - "python steps.py evaluate model {fusion} report.json"
    deps:
      - "model"
      - "{fusion}"
    outputs:
      - "report.json"
"""


def _project(root: Path, fusion: str) -> Path:
    """``fusion``: where fuse writes the weights; declared as fuse's output unless inside ``model``."""
    root.mkdir()
    (root / "steps.py").write_text(STEPS, encoding="utf-8")
    own = "" if fusion.startswith("model/") else f'\n      - "{fusion}"'
    (root / "project.yml").write_text(PROJECT.format(fusion=fusion, fusion_output=own), encoding="utf-8")
    return root


def _run(root: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "weasel", "run", "all", str(root)], cwd=root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _mtimes(root: Path) -> Dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != "project.lock"}


def test_second_run_executes_nothing_and_a_deleted_output_reruns_only_its_command(tmp_path):
    root = _project(tmp_path / "fixed", fusion="fusion.json")
    first = _run(root)
    assert first.count("Running command:") == 3, first
    before = _mtimes(root)
    second = _run(root)
    assert "Running command:" not in second, second
    for name in ("train", "fuse", "evaluate"):
        assert f"Skipping '{name}': nothing changed" in second
    assert _mtimes(root) == before

    (root / "report.json").unlink()
    third = _run(root)
    assert "Skipping 'train': nothing changed" in third and "Skipping 'fuse': nothing changed" in third
    assert third.count("Running command:") == 1 and "steps.py evaluate" in third, third
    assert (root / "report.json").is_file()
    after = _mtimes(root)
    assert {k: v for k, v in after.items() if k != "report.json"} == {k: v for k, v in before.items() if k != "report.json"}


def test_control_fuse_writing_into_the_model_retrains(tmp_path):
    """What the project did before: fuse changes train's output, so the second run trains again."""
    root = _project(tmp_path / "old", fusion="model/fusion.json")
    _run(root)
    second = _run(root)
    assert "Skipping 'train'" not in second and "steps.py train" in second, second
