"""A full disk or a refused write while an output is written: a numbered error naming the path, the
previous output intact, no temporary file left (``spacy_angel.fileio``; the writers all go through it)."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_angel.apps.cli import get_app
from spacy_angel.errors import OutputWriteError
from spacy_angel.fileio import atomic_directory, atomic_write_text

from conftest import tiny_pubtator_corpus


#: (fault, surface, outcome, test) rows of docs/reliability.md
COMMANDS = ["kb build", "link", "train mine", "train pretrain-data"]
FAULTS = [
    ("disk full (ENOSPC) while flushing a file", "every file we write (fileio.atomic_open)",
     "`[E410]` naming the file; the previous file intact; no temp file", "test_write_faults.py::test_a_file_write_that_fails_keeps_the_old_file_and_leaves_no_temp[ENOSPC at flush]"),
    ("permission refused (EACCES) at the rename", "every file we write (fileio.atomic_open)",
     "`[E410]` naming the file; the previous file intact; no temp file", "test_write_faults.py::test_a_file_write_that_fails_keeps_the_old_file_and_leaves_no_temp[EACCES at rename]"),
    ("disk full while a folder is written (a model save)", "every folder we write (fileio.atomic_directory)",
     "`[E410]` naming the folder; the previous folder intact; no temp folder", "test_write_faults.py::test_a_folder_write_that_fails_keeps_the_old_folder_and_leaves_no_temp"),
] + [
    ("disk full at the output's rename", name, "exit 1, `[E410]` naming the output; the previous output intact; no temp left",
     f"test_write_faults.py::test_a_command_on_a_full_disk_says_so_and_keeps_the_previous_output[{name}]")
    for name in COMMANDS
]


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _refused(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def _listing(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("where,fault", [("os.fsync", _full_disk), ("os.replace", _refused)], ids=["ENOSPC at flush", "EACCES at rename"])
def test_a_file_write_that_fails_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, where, fault):
    target = tmp_path / "report.json"
    target.write_text("the previous report", encoding="utf-8")
    monkeypatch.setattr(where, fault)
    with pytest.raises(OutputWriteError, match=r"\[E410\]") as err:
        atomic_write_text(target, "the new report")
    monkeypatch.undo()
    assert str(target) in str(err.value)
    assert target.read_text(encoding="utf-8") == "the previous report"
    assert _listing(tmp_path) == ["report.json"]


def test_a_folder_write_that_fails_keeps_the_old_folder_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("old", encoding="utf-8")
    with pytest.raises(OutputWriteError, match=r"\[E410\]"):
        with atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("new", encoding="utf-8")
            _full_disk()  # what save_pretrained raises when the disk fills mid-save
    assert (target / "config.json").read_text(encoding="utf-8") == "old"
    assert _listing(tmp_path) == ["model", "model/config.json"]


def test_other_errors_are_not_relabelled(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_directory(tmp_path / "x"):
            raise FileNotFoundError(errno.ENOENT, "an input the body could not find")


# ---------------------------------------------------------------------------- the commands
def _cases(tmp: Path, kb_dir: Path, model_dir: Path):
    (tmp / "src.tsv").write_text("D1\tbreast cancer\nD2\tmigraine\n", encoding="utf-8")
    (tmp / "in.jsonl").write_text(json.dumps({"id": "a", "text": "breast cancer", "start": 0, "end": 13}) + "\n", encoding="utf-8")
    corpus = tiny_pubtator_corpus(tmp / "train.txt")
    return {
        "kb build": (["kb", "build", str(tmp / "src.tsv"), "--output", "{out}"], "dir"),
        "link": (["link", str(model_dir), str(kb_dir), str(tmp / "in.jsonl"), "--output", "{out}", "--mode", "beam"], "file"),
        "train mine": (["train", "mine", str(model_dir), str(kb_dir), str(corpus), "--output", "{out}", "--top-k", "2",
                        "--num-beams", "2", "--threads", "1"], "file"),
        "train pretrain-data": (["train", "pretrain-data", str(kb_dir), "--output", "{out}"], "dir"),
    }


@pytest.mark.parametrize("name", COMMANDS)
def test_a_command_on_a_full_disk_says_so_and_keeps_the_previous_output(name, tmp_path, tiny_kb_dir, tiny_model_dir, monkeypatch):
    args, kind = _cases(tmp_path, tiny_kb_dir, tiny_model_dir)[name]
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in args]
    first = CliRunner().invoke(get_app(), argv)  # the previous output, written normally
    assert first.exit_code == 0, first.output
    before = {p: p.read_bytes() for p in ([out] if kind == "file" else sorted(out.rglob("*"))) if p.is_file()}
    listing = _listing(tmp_path)
    monkeypatch.setattr("os.replace", _full_disk)
    result = CliRunner().invoke(get_app(), argv)
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert "[E410]" in result.output and str(out) in result.output.replace("\n", "")
    assert {p: p.read_bytes() for p in before} == before
    assert _listing(tmp_path) == listing  # no temp file or folder left beside it


# ----------------------------------------------------------------------------- a filesystem that is really full
FAULTS.append(("a really full filesystem (a 256 kB tmpfs) while `kb build` writes a bigger KB", "kb build",
               "exit 1, `[E410]` naming the output; the previous KB intact; no temp left",
               "test_write_faults.py::test_kb_build_on_a_really_full_filesystem"))


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 256 kB tmpfs mounted for the test (root only, where the kernel lets the container mount)."""
    import subprocess

    mount = tmp_path / "small-fs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and a kernel that allows it)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow
def test_kb_build_on_a_really_full_filesystem(tiny_filesystem, tmp_path):
    """No monkeypatch: the kernel says ENOSPC. The small KB fits, the big one does not."""
    small, big = tmp_path / "small.tsv", tmp_path / "big.tsv"
    small.write_text("D1\tbreast cancer\nD2\tovarian cancer\n", encoding="utf-8")
    big.write_text("".join(f"C{i}\tsynthetic disease name number {i} of a long list\n" for i in range(20000)),
                   encoding="utf-8")
    out = tiny_filesystem / "kb"
    first = CliRunner().invoke(get_app(), ["kb", "build", str(small), "--output", str(out)])
    assert first.exit_code == 0, first.output
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    listing = _listing(tiny_filesystem)
    result = CliRunner().invoke(get_app(), ["kb", "build", str(big), "--output", str(out), "--overwrite"])
    assert result.exit_code == 1, result.output
    assert "[E410]" in result.output and str(out) in result.output.replace("\n", "")
    assert {p: p.read_bytes() for p in before} == before
    assert _listing(tiny_filesystem) == listing  # no temp file or folder left on the full filesystem
