"""Atomic outputs (spacy_angel.fileio) get the permissions any file the user writes gets: the umask
decides, not the 0600 / 0700 of tempfile.mkstemp / mkdtemp that they were renamed from."""
from __future__ import annotations

import os
import stat

import pytest

from spacy_angel.fileio import atomic_directory, atomic_write_json


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_and_directories_honour_the_umask(tmp_path, umask_022):
    out = atomic_write_json(tmp_path / "results.json", {"acc@1": 0.9})
    assert _mode(out) == 0o644
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "weights.bin").write_bytes(b"x")
    assert _mode(tmp_path / "model") == 0o755
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind


def test_a_failed_atomic_write_leaves_the_old_file(tmp_path, umask_022):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"v": object()})
    assert target.read_text() == '{\n  "v": 1\n}' and len(list(tmp_path.iterdir())) == 1
