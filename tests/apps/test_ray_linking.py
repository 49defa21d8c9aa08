"""``spacy-angel link --engine ray``: shard planning, parity with the single-process ``link`` and
resuming a killed job.

Ray is in the ``dev`` extra, so a missing Ray fails this module instead of skipping it. One local
Ray (2 CPUs, small object store) serves the whole module; each job still starts its own 2 actors.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
import ray  # noqa: F401  (fail, do not skip, when the dev extra is incomplete)
from typer.testing import CliRunner

from spacy_angel.apps.cli import get_app
from spacy_angel.fileio import iter_jsonl
from spacy_angel.apps.ray_linking import (
    MANIFEST,
    Shard,
    ShardLinker,
    input_files,
    link_corpus,
    plan_shards,
    read_shard,
)
from spacy_angel.errors import ScaleError

TEXTS = [
    ("Patients with type 2 diabetes mellitus and hypertension were enrolled.", ["type 2 diabetes mellitus", "hypertension"]),
    ("A family history of breast cancer raises the risk.", ["breast cancer"]),
    ("He had a heart attack last year.", ["heart attack"]),
    ("Cystic fibrosis and migraine are unrelated.", ["cystic fibrosis", "migraine"]),
    ("Lung carcinoma was found on the scan.", ["lung carcinoma"]),
    ("No disease is named here.", []),
    ("Juvenile diabetes, low blood pressure and huntington disease.", ["juvenile diabetes", "low blood pressure", "huntington disease"]),
]


def _record(i: int, text: str, names: List[str], with_id: bool) -> dict:
    lower = text.lower()
    spans = [{"start": lower.index(n), "end": lower.index(n) + len(n)} for n in names]
    rec = {"text": text, "spans": spans}
    if with_id:
        rec["id"] = f"doc{i}"
    return rec


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A directory of shards: a.jsonl (ids), b.jsonl (no ids, blank lines, single start/end), c.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("corpus") / "in"
    root.mkdir()
    a = [_record(i, t, n, True) for i, (t, n) in enumerate(TEXTS)]
    (root / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a), encoding="utf-8")
    lines = []
    for i, (text, names) in enumerate(TEXTS[:5]):
        rec = _record(i, text, names[:1], False)
        if rec["spans"] and i % 2:  # the one-span form
            rec.update(rec.pop("spans")[0])
        lines.append(json.dumps(rec))
        if i in (1, 2):
            lines.append("   ")
    (root / "b.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = [{**r, "id": "pq-" + r["id"]} for r in a]
    pq.write_table(pa.Table.from_pylist(rows), root / "c.parquet", row_group_size=3)
    return root


@pytest.fixture(scope="module")
def ray_session():
    """One small local Ray for the module (``link_corpus`` joins it and leaves it running)."""
    from spacy_angel.apps.ray_linking import OBJECT_STORE_BYTES

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def _key(rec: dict) -> Tuple[str, int, int]:
    return rec["id"], rec["start"], rec["end"]


def _read_output(path: Path) -> List[dict]:
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return sorted((rec for f in files for _, rec in iter_jsonl(f)), key=_key)


def _assert_same(got: List[dict], expected: List[dict]) -> None:
    assert [_key(r) for r in got] == [_key(r) for r in expected]
    for g, e in zip(got, expected):
        assert g["mention"] == e["mention"]
        assert [c["ids"] for c in g["candidates"]] == [c["ids"] for c in e["candidates"]]
        assert [c["name"] for c in g["candidates"]] == [c["name"] for c in e["candidates"]]
        assert [c["score"] for c in g["candidates"]] == pytest.approx([c["score"] for c in e["candidates"]], rel=1e-4)


@pytest.fixture(scope="module")
def single_process(corpus, tiny_model_dir, tiny_kb_dir, tmp_path_factory) -> List[dict]:
    """What the single-process ``link`` writes for a.jsonl, b.jsonl and (as a.jsonl with other ids) c.parquet."""
    out = tmp_path_factory.mktemp("single")
    runner = CliRunner()
    expected: List[dict] = []
    for name in ("a", "b"):
        result = runner.invoke(get_app(), ["link", str(tiny_model_dir), str(tiny_kb_dir), str(corpus / f"{name}.jsonl"),
                                           "--output", str(out / f"{name}.jsonl"), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        expected += _read_output(out / f"{name}.jsonl")
    expected += [{**r, "id": "pq-" + r["id"]} for r in _read_output(out / "a.jsonl")]
    return sorted(expected, key=_key)


# ---------------------------------------------------------------------------- planning (no Ray)
def test_shards_cover_every_record_once_with_its_line_number(corpus, tmp_path):
    files = input_files(str(corpus))
    assert [f.name for f in files] == ["a.jsonl", "b.jsonl", "c.parquet"]
    assert input_files(str(corpus / "*.jsonl")) == files[:2]
    shards = plan_shards(files, shard_size=3)
    assert [s.name for s in shards] == ["a-00000.jsonl", "a-00001.jsonl", "a-00002.jsonl", "b-00000.jsonl",
                                        "b-00001.jsonl", "c-00000.jsonl", "c-00001.jsonl", "c-00002.jsonl"]
    for path in files[:2]:  # JSONL: the same (line number, record) pairs as the single-process reader
        got = [pair for s in shards if s.source == str(path) for pair in read_shard(s)]
        assert got == list(iter_jsonl(path))
    rows = [rec for s in shards if s.kind == "parquet" for _, rec in read_shard(s)]
    assert [r["id"] for r in rows] == [f"pq-doc{i}" for i in range(len(TEXTS))]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    [only] = plan_shards([empty], shard_size=3)
    assert only.records == 0 and list(read_shard(only)) == []
    with pytest.raises(ScaleError, match="no input files"):
        input_files(str(tmp_path / "nothing-*.jsonl"))


# ---------------------------------------------------------------------------- with Ray
@pytest.mark.usefixtures("ray_session")
def test_ray_job_resumes_a_killed_run_and_equals_single_process(
    corpus, single_process, tiny_model_dir, tiny_kb_dir, tmp_path
):
    out = tmp_path / "linked"
    shards = plan_shards(input_files(str(corpus)), shard_size=3)
    assert len(shards) == 8
    # what a killed run leaves: some shards written (by the same actor class, here in-process),
    # one shard half-written as atomic_open's temp file, the rest not started
    settings = dict(num_beams=5, top_k=5, batch_size=32, context_window=0, device="cpu")
    threads = torch.get_num_threads()
    try:
        actor = ShardLinker(str(tiny_model_dir), str(tiny_kb_dir), str(out), settings)  # sets 1 torch thread
        done = [shards[0], shards[3], shards[6]]
        actor({k: [getattr(s, k) for s in done] for k in Shard.__dataclass_fields__})
    finally:
        torch.set_num_threads(threads)
    (out / ".b-00001.jsonl.abc123.tmp").write_text('{"id": "half', encoding="utf-8")
    mtimes: Dict[str, int] = {p.name: p.stat().st_mtime_ns for p in out.glob("*.jsonl")}
    assert sorted(mtimes) == sorted(s.name for s in done)

    result = CliRunner().invoke(get_app(), [
        "link", str(tiny_model_dir), str(tiny_kb_dir), str(corpus), "--output", str(out), "--engine", "ray",
        "--workers", "2", "--shard-size", "3", "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "in 5 shards (3 of 8 already done)" in result.output
    assert sorted(p.name for p in out.glob("*.jsonl")) == sorted(s.name for s in shards)
    for name, mtime in mtimes.items():  # finished shards are not redone
        assert (out / name).stat().st_mtime_ns == mtime, name
    assert not list(out.glob(".*.tmp")) and (out / MANIFEST).exists()
    _assert_same(_read_output(out), single_process)

    # nothing left to do: no Ray job at all
    report = link_corpus(str(tiny_model_dir), str(tiny_kb_dir), str(corpus), out, workers=2, shard_size=3, progress=False)
    assert report["linked"] == [] and report["skipped"] == 8 and report["busy"] == {}
    # another plan in the same directory would mix two jobs' shards
    with pytest.raises(ScaleError, match="changed: shard_size"):
        link_corpus(str(tiny_model_dir), str(tiny_kb_dir), str(corpus), out, workers=2, shard_size=4, progress=False)


def test_cli_imports_ray_only_for_the_ray_engine():
    probe = "import sys, spacy_angel.apps.cli; print(int('ray' in sys.modules), int('spacy_angel.apps.ray_linking' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]


def test_ray_engine_errors_name_the_problem(tiny_model_dir, tiny_kb_dir, tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "abc", "spans": [{"start": 0, "end": 9}]}\n', encoding="utf-8")
    args = ["link", str(tiny_model_dir), str(tiny_kb_dir), "--output", str(tmp_path / "o"), "--engine", "ray"]
    result = runner.invoke(get_app(), args[:3] + [str(tmp_path / "none-*.jsonl")] + args[3:])
    assert result.exit_code == 1 and "no input files" in result.output
    result = runner.invoke(get_app(), args[:3] + [str(bad)] + args[3:] + ["--ner", "en_core_web_sm"])
    assert result.exit_code == 1 and "--ner" in result.output
    result = runner.invoke(get_app(), args[:3] + [str(bad)] + args[3:] + ["--workers", "0"])
    assert result.exit_code == 1 and "--workers must be at least 1" in result.output
    result = runner.invoke(get_app(), args[:3] + [str(bad)] + args[3:] + ["--device", "cuda"])
    assert result.exit_code == 1 and "needs --num-gpus-per-worker > 0" in result.output


@pytest.mark.slow
def test_killed_ray_job_resumes_where_it_stopped(corpus, single_process, tiny_model_dir, tiny_kb_dir, tmp_path):
    """A real kill: SIGKILL the CLI (and its local Ray) once the first shard is on disk, then re-run."""
    out = tmp_path / "linked"
    cmd = [sys.executable, "-m", "spacy_angel.apps.cli", "link", str(tiny_model_dir), str(tiny_kb_dir), str(corpus),
           "--output", str(out), "--engine", "ray", "--workers", "1", "--shard-size", "1", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.jsonl")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this test started: the CLI and the Ray it launched
        proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.jsonl")}
    total = len(plan_shards(input_files(str(corpus)), 1))
    assert 0 < len(done) < total
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"({len(done)} of {total} already done)" in result.stdout
    assert all((out / n).stat().st_mtime_ns == t for n, t in done.items())
    _assert_same(_read_output(out), single_process)
