"""A worker process of a multi-process pipe killed mid-run: the caller gets an error, not a hang.

Each scenario runs in a subprocess (its own session) with a timeout, so a hang fails the test (or, for
spaCy's own ``nlp.pipe``, is what the slow test documents) and never blocks the suite. One worker kills
itself (``SIGKILL``, as the OOM killer does) at its third doc; a flag file makes sure only one does.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")

SCRIPT = r"""
import json, os, signal, sys
import spacy
from spacy.language import Language
from spacy_angel.pipeline.worker_pipe import pipe_in_processes

model_dir, kb_dir, how, flag = sys.argv[1:5]
PARENT = os.getpid()
seen = [0]

@Language.component("die_once_in_a_worker")
def die_once_in_a_worker(doc):
    if flag != "-" and os.getpid() != PARENT:
        seen[0] += 1
        if seen[0] == 3:
            try:
                os.close(os.open(flag, os.O_CREAT | os.O_EXCL))  # only the first worker here dies
            except FileExistsError:
                return doc
            os.kill(os.getpid(), signal.SIGKILL)
    return doc

nlp = spacy.blank("en")
ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
ruler.add_patterns([{"label": "DISEASE", "pattern": p} for p in ["breast cancer", "migraine", "heart attack"]])
nlp.add_pipe("angel_linker", config={"model": model_dir, "kb": kb_dir, "device": "cpu"})
nlp.add_pipe("die_once_in_a_worker")
texts = ["Women with breast cancer were followed.", "Migraine is common.", "A heart attack.", "Nothing."] * 8

def annotations(docs):
    return [[(e.text, e.kb_id_, e._.cui) for e in doc.ents] for doc in docs]

if how == "spacy":
    docs = nlp.pipe(texts, n_process=2, batch_size=2)
else:
    docs = pipe_in_processes(nlp, texts, n_process=2, batch_size=2)
got = annotations(docs)
print(json.dumps({"got": got, "one": annotations(nlp.pipe(texts))}))
"""


def run_scenario(model: Path, kb: Path, how: str, flag: str, timeout: float) -> Tuple[Optional[subprocess.CompletedProcess], float]:
    """(the finished process, or None when it ran past ``timeout`` and its group was killed; seconds)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM")}
    args: List[str] = [sys.executable, "-c", SCRIPT, str(model), str(kb), how, flag]
    start = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung parent and its workers
        proc.communicate()
        return None, time.monotonic() - start
    return subprocess.CompletedProcess(args, proc.returncode, out, err), time.monotonic() - start


#: (fault, surface, outcome, test) rows of docs/reliability.md
FAULTS = [
    ("a worker process killed (SIGKILL) mid-run", "pipe_in_processes(nlp, texts, n_process=2)",
     "`WorkerDiedError` `[E430]` naming the worker and its signal, in seconds; the other workers stopped",
     "pipeline/test_dying_workers.py::test_a_killed_worker_is_an_error_not_a_hang"),
    ("a worker process killed (SIGKILL) mid-run", "nlp.pipe(texts, n_process=2) with angel_linker in the pipeline",
     "`WorkerDiedError` `[E431]` naming the worker and its signal, in about a second (spaCy 3.8 alone hangs for ever; "
     "spacy_angel/pipeline/pipe_watchdog.py)",
     "pipeline/test_dying_workers.py::test_nlp_pipe_with_the_linker_raises_when_a_worker_dies"),
]


def test_pipe_in_processes_returns_what_nlp_pipe_returns(tiny_model_dir, tiny_kb_dir):
    proc, _ = run_scenario(tiny_model_dir, tiny_kb_dir, "ours", "-", timeout=120)
    assert proc is not None, "pipe_in_processes did not return in 120 s"
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["got"] == result["one"]
    assert sum(len(doc) for doc in result["got"]) == 24 and all(e[1] for doc in result["got"] for e in doc)


def test_a_killed_worker_is_an_error_not_a_hang(tiny_model_dir, tiny_kb_dir, tmp_path):
    flag = tmp_path / "died"
    proc, seconds = run_scenario(tiny_model_dir, tiny_kb_dir, "ours", str(flag), timeout=90)
    assert proc is not None, "a dead worker hung pipe_in_processes"
    assert flag.exists(), "no worker was killed"
    assert proc.returncode == 1 and "WorkerDiedError" in proc.stderr and "[E430]" in proc.stderr, proc.stderr[-3000:]
    assert "killed by SIGKILL" in proc.stderr and "n_process" in proc.stderr


def test_nlp_pipe_with_the_linker_raises_when_a_worker_dies(tiny_model_dir, tiny_kb_dir, tmp_path):
    """spaCy 3.8 alone blocks for good here; the linker's fork hook watches the workers and raises in the
    caller (pipeline/pipe_watchdog.py)."""
    flag = tmp_path / "died"
    proc, seconds = run_scenario(tiny_model_dir, tiny_kb_dir, "spacy", str(flag), timeout=90)
    assert flag.exists(), "no worker was killed"
    assert proc is not None, "nlp.pipe hung after a worker died"
    assert proc.returncode == 1 and "WorkerDiedError" in proc.stderr and "[E431]" in proc.stderr, proc.stderr[-3000:]
    assert "killed by SIGKILL" in proc.stderr


def test_nlp_pipe_with_the_linker_still_returns_what_one_process_returns(tiny_model_dir, tiny_kb_dir):
    """The watcher never acts on workers that end normally."""
    proc, _ = run_scenario(tiny_model_dir, tiny_kb_dir, "spacy", "-", timeout=120)
    assert proc is not None and proc.returncode == 0, None if proc is None else proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["got"] == result["one"]
