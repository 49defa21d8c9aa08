"""``nlp.pipe(texts, n_process=2)`` returns, and returns what ``n_process=1`` does, warm and cold.

Each check runs in a subprocess with a timeout: the bug was a hang (forked workers waiting on
libgomp's barrier for threads that did not survive the fork, see ``spacy_angel.pipeline.fork_safety``), and
a hang must fail this test instead of blocking the suite. "warm": the parent has linked a batch on
two torch threads before forking (the case that hung); "cold": it has not.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import List, Optional

import pytest

def run_python(args: List[str], timeout: float, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """``python ARGS`` in its own session; on timeout the whole group is killed (hung forked
    workers included, which would otherwise outlive their parent) and the test fails."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"python {' '.join(args[:1])} ... did not return in {timeout:.0f} s (hang)")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


SCRIPT = r"""
import json, sys
import spacy, torch

model_dir, kb_dir, mode = sys.argv[1:4]
torch.set_num_threads(2)  # an OpenMP team to inherit, even on a one-core runner
nlp = spacy.blank("en")
ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
ruler.add_patterns([{"label": "DISEASE", "pattern": p} for p in
                    ["breast cancer", "high blood pressure", "migraine", "cystic fibrosis", "heart attack"]])
nlp.add_pipe("angel_linker", config={"model": model_dir, "kb": kb_dir, "device": "cpu"})
texts = ["Women with breast cancer and high blood pressure were followed for ten years.",
         "Migraine is common; cystic fibrosis is rare. A heart attack is an emergency.",
         "No disease here."] * 3

def tuples(value):
    # msgpack (doc.to_bytes, how workers send docs back) turns tuples into lists
    if isinstance(value, (list, tuple)):
        return tuple(tuples(v) for v in value)
    return round(value, 5) if isinstance(value, float) else value

def annotations(docs):
    return [[(e.text, e.kb_id_, e._.cui, tuples(e._.candidates)) for e in doc.ents] for doc in docs]

if mode == "warm":
    nlp(texts[0])  # the parent has run the model (threads started) before the workers fork
    two = annotations(nlp.pipe(texts, n_process=2, batch_size=2))
    one = annotations(nlp.pipe(texts, n_process=1))
else:
    two = annotations(nlp.pipe(texts, n_process=2, batch_size=2))
    one = annotations(nlp.pipe(texts, n_process=1))
print(json.dumps({"one": one, "two": two, "threads": torch.get_num_threads()}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
@pytest.mark.parametrize("mode", ["warm", "cold"])
def test_pipe_with_two_processes_returns_the_single_process_result(tiny_model_dir, tiny_kb_dir, mode):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM")}
    proc = run_python(["-c", SCRIPT, str(tiny_model_dir), str(tiny_kb_dir), mode], timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["two"] == result["one"]
    assert sum(len(doc) for doc in result["one"]) == 15 and all(e[1] not in ("", None) for doc in result["one"] for e in doc)
    assert result["threads"] == 2, "the parent keeps its threads; only forked workers run on one"
    assert "TOKENIZERS_PARALLELISM" not in proc.stderr, "workers inherit TOKENIZERS_PARALLELISM=false: no warning"


def test_fork_hooks_restore_the_parent_and_set_one_thread_in_the_child():
    """The hooks themselves, on a bare ``os.fork``: the child runs torch on one thread and keeps
    tokenizers serial; the parent's environment and thread count are untouched."""
    code = r"""
import os, json, torch
from spacy_angel.pipeline.fork_safety import install_fork_hooks
os.environ.pop("TOKENIZERS_PARALLELISM", None)
torch.set_num_threads(2)
(torch.randn(512, 512) @ torch.randn(512, 512)).sum()  # start the OpenMP team
install_fork_hooks(); install_fork_hooks()  # idempotent
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    (torch.randn(512, 512) @ torch.randn(512, 512)).sum()  # would hang on a stale team
    os.write(write, json.dumps([torch.get_num_threads(), os.environ.get("TOKENIZERS_PARALLELISM")]).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = json.loads(os.read(read, 1000))
print(json.dumps({"child": child, "parent": [torch.get_num_threads(), os.environ.get("TOKENIZERS_PARALLELISM")]}))
"""
    proc = run_python(["-c", code], timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"child": [1, "false"], "parent": [2, None]}
