"""One writer per output: the lock a command holds beside what it writes (spacy_angel.locks)."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spacy_angel.errors import OutputLockedError
from spacy_angel.locks import lock_path, output_lock

HOLD = (
    "import sys, time\n"
    "from spacy_angel.locks import output_lock\n"
    "with output_lock(sys.argv[1], command='holder-under-test'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


def _holder_process(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    target = tmp_path / "model"
    proc = _holder_process(target)
    try:
        with pytest.raises(OutputLockedError, match=r"\[E400\]") as err:
            with output_lock(target, command="second"):
                pass
        message = str(err.value)
        assert f"pid {proc.pid}" in message and "holder-under-test" in message and str(target) in message
    finally:
        proc.kill()
        proc.wait()


def test_the_same_process_cannot_take_one_output_twice(tmp_path):
    with output_lock(tmp_path / "out.jsonl"):
        with pytest.raises(OutputLockedError, match=r"\[E400\]"):
            with output_lock(tmp_path / "out.jsonl"):
                pass
        with output_lock(tmp_path / "other.jsonl"):  # another output is another lock
            pass


def test_a_killed_holders_lock_is_taken_over_and_logged(tmp_path, caplog):
    target = tmp_path / "kb"
    proc = _holder_process(target)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(lock_path(target).read_text())["pid"] == proc.pid  # the file outlived its holder
    with caplog.at_level(logging.WARNING, logger="spacy_angel.locks"):
        with output_lock(target, command="rerun") as path:
            assert json.loads(path.read_text())["command"] == "rerun"
    assert any("[W010]" in r.getMessage() and str(proc.pid) in r.getMessage() for r in caplog.records)


def test_a_released_lock_leaves_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "pairs.jsonl"
    with output_lock(target) as path:
        assert path == lock_path(target) and path.parent == target.parent
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
    assert not lock_path(target).exists()
    with output_lock(target):  # and it can be taken again at once
        pass


def test_an_exception_in_the_body_releases_the_lock(tmp_path):
    with pytest.raises(RuntimeError):
        with output_lock(tmp_path / "x"):
            raise RuntimeError("boom")
    assert not lock_path(tmp_path / "x").exists()
    start = time.monotonic()
    with output_lock(tmp_path / "x"):
        pass
    assert time.monotonic() - start < 5


#: (fault, surface, outcome, test) rows of docs/reliability.md besides the per-writer ones
FAULTS = [
    ("a second writer in another process", "output_lock", "OutputLockedError `[E400]` with its pid and command",
     "test_locks.py::test_a_second_writer_is_refused_naming_the_holder"),
    ("the same process takes one output twice", "output_lock", "`[E400]`; another output is another lock",
     "test_locks.py::test_the_same_process_cannot_take_one_output_twice"),
    ("the holder was killed (SIGKILL) mid-run", "output_lock", "the kernel dropped its flock: taken over, logged as `[W010]`",
     "test_locks.py::test_a_killed_holders_lock_is_taken_over_and_logged"),
    ("the command raised mid-run", "output_lock", "lock released and its file removed", "test_locks.py::test_an_exception_in_the_body_releases_the_lock"),
    ("a file where the output's folder should be", "train kb-linker", "exit 1, `[E401]`; nothing written",
     "training/stages/test_kb_linker.py::test_inputs_it_cannot_use_are_refused_before_any_work"),
    ("a second main job while the first builds the cache", "python -m training.hpo_default", "exit 1, `[E400]`; nothing built",
     "test_locks.py::test_the_main_job_refuses_a_cache_another_run_is_building"),
    ("a library writes a file 0600 (model.safetensors)", "every model folder we write",
     "modes follow the umask (0644 under 022, 0664 under 002)", "test_fileio.py::test_a_saved_model_folder_honours_the_umask"),
    ("killed (SIGKILL) after the positive stage", "train kb-linker", "the same command resumes; the same weights and report",
     "training/stages/test_kb_linker.py::test_a_killed_build_resumes_to_the_same_model"),
]


# ---------------------------------------------------------------------------- every writing command
# (command line: OUT is the output whose lock is held, @name a path under tmp_path; then the locked path)
WRITERS = {
    "kb build": (["kb", "build", "@src.tsv", "--output", "OUT"], "OUT"),
    "init-model": (["init-model", "@kb", "OUT"], "OUT"),
    "link": (["link", "@model", "@kb", "@in.jsonl", "--output", "OUT"], "OUT"),
    "link --html": (["link", "@model", "@kb", "@in.jsonl", "--output", "@links.jsonl", "--html", "OUT"], "OUT"),
    "train positive": (["train", "positive", "@model", "@kb", "@train.txt", "--output", "OUT"], "OUT"),
    "train mine": (["train", "mine", "@model", "@kb", "@train.txt", "--output", "OUT"], "OUT"),
    "train crossfit pairs": (["train", "crossfit", "@model", "@kb", "@train.txt", "--pairs", "OUT", "--output", "@folds"], "OUT"),
    "train crossfit folds": (["train", "crossfit", "@model", "@kb", "@train.txt", "--pairs", "@p.jsonl", "--output", "OUT"], "OUT"),
    "train dpo": (["train", "dpo", "@model", "@kb", "@pairs.jsonl", "--output", "OUT"], "OUT"),
    "train iterate": (["train", "iterate", "@model", "@kb", "@train.txt", "--output", "OUT"], "OUT"),
    "train pretrain-data": (["train", "pretrain-data", "@kb", "--output", "OUT"], "OUT"),
    "train evaluate": (["train", "evaluate", "@model", "@kb", "@test.txt", "--output", "OUT"], "OUT"),
    "train fuse": (["train", "fuse", "OUT_MODEL", "@kb", "@dev.txt"], "OUT_MODEL/fusion.json"),
    "train compare": (["train", "compare", "@a.json", "@b.json", "--output", "OUT"], "OUT"),
    "train kb-linker": (["train", "kb-linker", "@kb", "OUT"], "OUT"),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_writer_refuses_an_output_another_run_is_writing(name, tmp_path):
    from typer.testing import CliRunner

    from spacy_angel.apps.cli import get_app

    args, locked = WRITERS[name]
    out = tmp_path / "out"
    model = tmp_path / "model"
    paths = {"OUT": str(out), "OUT_MODEL": str(model)}
    argv = [paths.get(a, str(tmp_path / a[1:]) if a.startswith("@") else a) for a in args]
    target = Path(locked.replace("OUT_MODEL", str(model)).replace("OUT", str(out)))
    with output_lock(target, command="the first run"):
        result = CliRunner().invoke(get_app(), argv)
    assert result.exit_code == 1, (name, result.output)
    assert "[E400]" in result.output and "the first run" in result.output, (name, result.output)
    assert not out.exists()  # refused before any work


def test_the_main_job_refuses_a_cache_another_run_is_building(tmp_path, capsys):
    from training.hpo_default import main as hm

    with output_lock(tmp_path / hm.MODEL_NAME, command="the first main job"):
        assert hm.main(["--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "[E400]" in err and "the first main job" in err
    assert not (tmp_path / hm.MODEL_NAME).exists()


def test_ranks_above_0_of_a_distributed_launch_take_no_lock(tmp_path, monkeypatch):
    """accelerate launch / torchrun: rank 0 holds the output's lock; the other ranks of the same job must
    not be refused by it (they write nothing), while another job still is."""
    import typer

    from spacy_angel.apps.cli_support import writing

    out = tmp_path / "model"
    with writing(out):  # rank 0 (no RANK set) holds it
        monkeypatch.setenv("RANK", "1")
        with writing(out):
            pass  # not refused
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(typer.Exit):  # another rank 0 (another job): refused, [E400] printed
            with writing(out):
                pass
