"""The soak benchmark's own check, small (slow): bench/soak.py links NCBI-disease documents through one
process, ``nlp.pipe(n_process=2)`` and two Ray workers, and every mention's top concept must agree.
The memory-growth figure needs a long run and lives in docs/reliability.md (``bench/soak.py``), not here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_small_soak_links_the_same_in_every_engine(shared_data, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the [scale] extra is not installed")
    corpus = shared_data.need("ncbi-disease/NCBItestset_corpus.txt")
    kb_source = shared_data.need("medic/CTD_diseases_2017.tsv.gz")
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--mentions", "1500", "--every", "0.5",
                           "--corpus", str(corpus), "--kb-source", str(kb_source), "--cache-dir", str(tmp_path / "cache"),
                           "--json", str(out)], capture_output=True, text=True, cwd=str(ROOT), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mentions"] >= 1500
    assert report["equal_to_one_process"] == {"pipe1": True, "pipe2": True, "ray2": True}
    for engine in ("pipe2", "ray2"):  # the sampler saw the workers of each parallel engine
        assert report["engines"][engine]["workers"], engine
