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


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_a_saved_model_folder_honours_the_umask(tiny_model_dir, tmp_path, umask):
    """save_pretrained writes model.safetensors 0600; the folder we rename into place follows the umask."""
    from spacy_angel.seq2seq.loading import load_model_and_tokenizer, save_pretrained_atomic

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    before = os.umask(umask)
    try:
        out = save_pretrained_atomic(model, tokenizer, tmp_path / "model")
    finally:
        os.umask(before)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert "model.safetensors" in modes
    assert set(modes.values()) == {0o666 & ~umask}, modes
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask
