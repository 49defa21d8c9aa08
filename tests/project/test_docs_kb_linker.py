"""docs/kb-linker.md quotes docs/results/kb-linker.json (the command's own reports, collected by
projects/angel/scripts/kb_linker_results.py): its table must be the one the script renders."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_the_kb_linker_table_is_rendered_from_the_results_file():
    path = DOCS / "results" / "kb-linker.json"
    if not path.exists():
        pytest.skip("no kb-linker results yet")
    sys.path.insert(0, str(ROOT / "projects" / "angel" / "scripts"))
    try:
        from kb_linker_results import table
    finally:
        sys.path.pop(0)
    results = json.loads(path.read_text(encoding="utf-8"))
    assert {"hpo", "doid", "medic"} <= set(results)
    for row in results.values():
        assert {"n", "tfidf_acc1", "beam_acc1", "hybrid_acc1", "seconds", "peak_rss_mb", "command"} <= set(row)
    assert table(results) in (DOCS / "kb-linker.md").read_text(encoding="utf-8")
