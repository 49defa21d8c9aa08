"""Run a ``spacy-angel`` command and SIGKILL it at a chosen point of its writes (``tests/test_kills.py``).

    python tests/kill_runner.py POINT NAME N -- ARGS...   one run of ``spacy-angel ARGS`` in this process
    python tests/kill_runner.py --serve                    a fork server (what the tests use)

``POINT NAME N``: the command kills itself (``SIGKILL``: no ``finally``, no ``except``, no atexit) the
N-th time (1-based) it reaches POINT for an output called NAME (the last part of its path):

    early          about to create NAME's temp file or folder (``fileio._temp_beside``): nothing written
    mid-write      a write into NAME's temp file: half of the bytes written and flushed, then killed
    before-rename  the first ``os.replace`` of NAME, just before it (onto NAME; for a folder with a
                   previous version, the one moving that aside)
    after-rename   ``os.replace`` onto NAME, just after it (NAME in place; the command not finished)
    aside          ``os.replace`` moving the previous folder NAME aside (``atomic_directory``), just after
                   it: NAME is absent until the new folder is renamed in
    checkpoint     the Trainer's checkpoint NAME (``checkpoint-N``) saved whole, just after it (training not
                   finished: what a re-run resumes from)
    mid-checkpoint the Trainer's checkpoint NAME with its weights, optimizer and RNG state written, just
                   before its ``trainer_state.json`` (the Trainer writes a checkpoint in place, file by file,
                   not through ``fileio``)

The fork server imports the command line and what its commands import (torch, transformers, ...)
once and runs each request in a forked child, so a test of 30 kills pays for the commands, not for
60 interpreter starts. Torch runs on one thread in the server and its children (no OpenMP team to
inherit across the fork). A request is one JSON line on stdin, ``{"argv": [...], "kill": [POINT, NAME,
N] or null, "log": path}``; the answer one JSON line on stdout, ``{"pid": ..., "signal": 9 or null,
"exit": code or null}``. The child's stdout and stderr go to ``log``.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Callable, List, Optional, Sequence

# run as a script, sys.path[0] is tests/, where tests/training/ would shadow the training package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

POINTS = ("early", "mid-write", "before-rename", "after-rename", "aside", "checkpoint", "mid-checkpoint")


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _KillingHandle:
    """A temp file handle that, at its ``hit()`` write, writes half the bytes, flushes and dies."""

    def __init__(self, handle, hit: Callable[[], bool]) -> None:
        self._handle, self._hit = handle, hit

    def write(self, data):
        if self._hit():
            self._handle.write(data[: max(1, len(data) // 2)])
            self._handle.flush()
            die()
        return self._handle.write(data)

    def __enter__(self):
        self._handle.__enter__()
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)

    def __getattr__(self, attr):
        return getattr(self._handle, attr)


def arm(point: str, name: str, nth: int) -> None:
    """Patch this process so it kills itself at the ``nth`` ``point`` of output ``name``."""
    import spacy_angel.fileio as fileio

    if point not in POINTS:
        raise SystemExit(f"unknown kill point {point!r}: one of {', '.join(POINTS)}")
    seen = [0]

    def hit() -> bool:
        seen[0] += 1
        return seen[0] == nth

    real_temp = fileio._temp_beside
    if point in ("checkpoint", "mid-checkpoint"):
        _arm_trainer(point, name, hit)
    elif point == "early":
        def temp_beside(path, directory=False):
            if Path(path).name == name and hit():
                die()
            return real_temp(path, directory)

        fileio._temp_beside = temp_beside
    elif point == "mid-write":
        ours = set()
        real_fdopen = os.fdopen

        def temp_beside(path, directory=False):
            fd, tmp = real_temp(path, directory)
            if fd >= 0 and Path(path).name == name:
                ours.add(fd)
            return fd, tmp

        def fdopen(fd, *args, **kwargs):
            handle = real_fdopen(fd, *args, **kwargs)
            if fd in ours:
                ours.discard(fd)
                return _KillingHandle(handle, hit)
            return handle

        fileio._temp_beside = temp_beside
        os.fdopen = fdopen
    else:
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            s, d = Path(src).name, Path(dst).name
            if point == "aside":
                match = s == name and d.startswith(f".{name}.") and d.endswith(".tmp.old")
            elif point == "before-rename":  # the first rename of NAME: moving a previous folder aside, or the new one in
                match = name in (s, d)
            else:
                match = d == name
            if match and point == "before-rename" and hit():
                die()
            real_replace(src, dst, *args, **kwargs)
            if match and point in ("after-rename", "aside") and hit():
                die()

        os.replace = replace


def _arm_trainer(point: str, name: str, hit: Callable[[], bool]) -> None:
    """The Trainer's checkpoints: killed after checkpoint NAME is saved, or before its trainer_state.json."""
    from transformers import Trainer
    from transformers.trainer_callback import TrainerState

    if point == "checkpoint":
        real_save = Trainer._save_checkpoint

        def save_checkpoint(self, *args, **kwargs):
            out = real_save(self, *args, **kwargs)
            if f"checkpoint-{self.state.global_step}" == name and hit():
                die()
            return out

        Trainer._save_checkpoint = save_checkpoint
    else:
        real_json = TrainerState.save_to_json

        def save_to_json(self, json_path):
            if Path(json_path).parent.name == name and hit():
                die()
            return real_json(self, json_path)

        TrainerState.save_to_json = save_to_json


def run_cli(argv: Sequence[str]) -> int:
    from spacy_angel.apps.cli import main

    try:
        main(list(argv))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


# the modules the commands import lazily: imported once in the server, not in every child
WARM = (
    "spacy_angel.linking.linker", "spacy_angel.retrieval.tfidf", "spacy_angel.seq2seq.offline_init",
    "spacy_angel.apps.model_card", "training.stages.mining", "training.stages.fuse", "training.data.corpora",
    "training.data.preprocess", "training.examples.pair_files", "training.examples.pretraining",
    "training.evaluation.metrics", "training.stages.positive", "training.stages.preference", "training.stages.iterate",
    "training.stages.crossfit", "training.stages.kb_linker", "spacy_angel.pipeline.linker_component", "trl", "sklearn.feature_extraction.text", "sklearn.linear_model", "sklearn.model_selection",
    "sklearn.metrics", "scipy.sparse", "pandas", "pydantic", "rich.console", "rich.traceback", "psutil", "dateutil.parser",
)


def serve() -> None:
    import importlib

    import torch

    torch.set_num_threads(1)
    for module in WARM:
        try:
            importlib.import_module(module)
        except ImportError:  # only a warm-up: the child imports what it needs
            pass
    import transformers

    for attr in ("BartForConditionalGeneration", "BartConfig", "PreTrainedTokenizerFast", "AutoTokenizer", "AutoConfig"):
        getattr(transformers, attr)
    from spacy_angel.apps.cli import get_app

    get_app()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request["argv"], request.get("kill"), request["log"])
        _, status = os.waitpid(pid, 0)
        answer = {"pid": pid, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                  "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
        print(json.dumps(answer), flush=True)


def _child(argv: List[str], kill: Optional[list], log: str) -> None:
    code = 99
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        if kill:
            arm(kill[0], kill[1], int(kill[2]))
        before = set(sys.modules)
        code = run_cli(argv)
        if os.environ.get("KILL_RUNNER_NEW_MODULES"):  # what WARM misses (each import costs every child)
            print("new modules:", sorted({m.split(".")[0] + "." + (m.split(".") + [""])[1] for m in set(sys.modules) - before}), file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the child must never return into the server's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        if len(sys.argv) < 5 or sys.argv[4] != "--":
            raise SystemExit(__doc__)
        arm(sys.argv[1], sys.argv[2], int(sys.argv[3]))
        sys.exit(run_cli(sys.argv[5:]))
