"""``link --engine ray`` with one linker actor SIGKILLed mid-shard: the job still writes every shard once.

How the job survives (``spacy_angel/apps/ray_linking.py``): Ray Data starts the ``map_batches`` actor
pool with ``max_restarts=-1`` and ``max_task_retries=-1`` unless told otherwise, so a dead actor is
restarted (loading the model again) and the shard it held is resubmitted; the shard's output is written
through ``atomic_open``, so the dead actor's half never shows as a shard, and a resubmitted shard replaces
nothing but its own temp. The kill comes from a ``sitecustomize`` put on the workers' ``PYTHONPATH``: the
first worker to rename a chosen shard into place dies just before it (the shard linked, its temp file
whole, not yet renamed).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SITECUSTOMIZE = r'''
import os, signal

_flag, _shard = os.environ.get("ANGEL_TEST_KILL_FLAG"), os.environ.get("ANGEL_TEST_KILL_SHARD")
if _flag and _shard:
    _replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == _shard:
            try:
                os.close(os.open(_flag, os.O_CREAT | os.O_EXCL))  # the first one only
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)

    os.replace = replace
'''

TEXTS = ["breast cancer and migraine", "a heart attack", "high blood pressure", "cystic fibrosis", "lung cancer", "migraine"]

#: (fault, surface, outcome, test) rows of docs/reliability.md
FAULTS = [
    ("a linker actor killed (SIGKILL) mid-shard (linked, not yet renamed in)", "link --engine ray",
     "Ray Data restarts the actor and resubmits the shard: every shard written once, the output equals the "
     "single-process link, no temp left", "apps/test_ray_actor_kill.py::test_a_killed_actor_does_not_lose_or_repeat_a_shard (slow)"),
]


@pytest.mark.slow
def test_a_killed_actor_does_not_lose_or_repeat_a_shard(tiny_model_dir, tiny_kb_dir, tmp_path):
    pytest.importorskip("ray")
    from typer.testing import CliRunner

    from spacy_angel.apps.cli import get_app
    from spacy_angel.apps.ray_linking import input_files, plan_shards
    from spacy_angel.fileio import iter_jsonl

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t, "start": 0, "end": len(t)}) + "\n"
                              for i, t in enumerate(TEXTS)), encoding="utf-8")
    single = tmp_path / "single.jsonl"
    result = CliRunner().invoke(get_app(), ["link", str(tiny_model_dir), str(tiny_kb_dir), str(corpus), "--output", str(single),
                                            "--device", "cpu"])
    assert result.exit_code == 0, result.output
    shards = [s.name for s in plan_shards(input_files(str(corpus)), 1)]
    victim = shards[2]

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    flag, out = tmp_path / "killed", tmp_path / "linked"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "ANGEL_TEST_KILL_FLAG": str(flag), "ANGEL_TEST_KILL_SHARD": victim}
    cmd = [sys.executable, "-m", "spacy_angel.apps.cli", "link", str(tiny_model_dir), str(tiny_kb_dir), str(corpus),
           "--output", str(out), "--engine", "ray", "--workers", "2", "--shard-size", "1", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=420)
    assert flag.exists(), f"no actor was killed: {proc.stderr[-2000:]}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"in {len(shards)} shards (0 of {len(shards)} already done)" in proc.stdout  # each shard reported once
    assert sorted(p.name for p in out.glob("*.jsonl")) == sorted(shards)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    got = sorted((rec for s in shards for _, rec in iter_jsonl(out / s)), key=lambda r: r["id"])
    expected = sorted((rec for _, rec in iter_jsonl(single)), key=lambda r: r["id"])
    assert [(r["id"], [c["ids"] for c in r["candidates"]]) for r in got] == [(r["id"], [c["ids"] for c in r["candidates"]]) for r in expected]
