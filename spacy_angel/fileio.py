"""Atomic writes and line-checked JSONL reads, shared by the runtime and the training code.

Every output is written to a temporary file (or directory) beside its target and renamed into
place, so a crash never leaves a half-written KB, trie, model, report or pairs file behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Tuple, Type, Union

PathLike = Union[str, Path]


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder + ``os.replace``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, data: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False))


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[Any]:
    """A file handle whose content replaces ``path`` only when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a temp directory that replaces ``path`` (whole) when the block ends without error.

    The old directory is renamed aside (not deleted) until the new one is in place, so no
    moment exists where a crash loses both.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        yield tmp
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} exists and is not a directory")
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def iter_jsonl(path: PathLike, error: Type[Exception] = ValueError, make_error: Callable[..., Exception] = None) -> Iterator[Tuple[int, dict]]:
    """Yield ``(line number, object)`` for each non-blank line; a bad line raises ``error`` naming file and line."""
    path = Path(path)

    def fail(lineno: int, message: str) -> Exception:
        return make_error(path, lineno, message) if make_error else error(f"{path}:{lineno}: {message}")

    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise fail(lineno, f"not valid JSON ({err.msg})") from None
            if not isinstance(rec, dict):
                raise fail(lineno, "expected a JSON object")
            yield lineno, rec
