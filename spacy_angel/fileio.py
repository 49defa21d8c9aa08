"""Atomic writes and line-checked JSONL reads, shared by the runtime and the training code.

Every output is written to a temporary file (or directory) beside its target and renamed into
place, so a crash never leaves a half-written KB, trie, model, report or pairs file behind.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, List, Sequence, Tuple, Type, Union

from spacy_angel.errors import Errors, OutputWriteError

PathLike = Union[str, Path]


GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: PathLike) -> bool:
    """Whether the file starts with the gzip magic bytes (its name may say otherwise)."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder + ``os.replace``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, data: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False))


def check_output_file(path: PathLike, option: str = "the output") -> None:
    """Refuse an output file path that is an existing directory; call it before the work, not at the
    rename after it (where the work would be lost to an IsADirectoryError)."""
    if Path(path).is_dir():
        raise IsADirectoryError(Errors.E117.format(path=path, option=option))


def check_output_directory(path: PathLike, markers: Sequence[str], option: str = "--output") -> None:
    """Refuse an output directory that will be replaced as a whole when it is a file, or a non-empty
    directory holding none of ``markers`` (what the command itself writes there): a mistyped
    ``--output`` must never delete a user's files. An absent or empty directory is fine."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(Errors.E114.format(path=out, option=option))
    if out.is_dir() and not any((out / marker).exists() for marker in markers):
        entries = sorted(e.name for e in out.iterdir())
        if entries:
            shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise FileExistsError(Errors.E113.format(path=out, shown=shown))


def _temp_beside(path: Path, directory: bool = False) -> Tuple[int, str]:
    """Create a new temp file (or directory: fd -1) beside ``path`` with the permissions that
    ``open()`` / ``mkdir`` would give it.

    Not ``tempfile.mkstemp`` / ``mkdtemp``: they create mode 0600 / 0700, so every result renamed
    from one was unreadable to the user's group (seen on docs/results/*.json); 0o666 / 0o777 let
    the umask decide, as for any file the user writes.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            if directory:
                os.mkdir(tmp, 0o777)
                return -1, str(tmp)
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(Errors.E257.format(path=path))


@contextlib.contextmanager
def _replacing(path: PathLike) -> Iterator[Tuple[int, Path]]:
    """A new temp file (its descriptor and path) beside ``path``, renamed over ``path`` when the block ends
    without error and removed otherwise."""
    path = Path(path)
    check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    try:
        yield fd, Path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise_write_error(err, path)
        raise


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[Any]:
    """A file handle whose content replaces ``path`` only when the block ends without error."""
    with _replacing(path) as (fd, _):
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """:func:`atomic_open` for writers that take a file name, not a handle (a library's ``save(path)``): the
    temp file's path, renamed over ``path`` when the block ends without error."""
    with _replacing(path) as (fd, tmp):
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())


def raise_write_error(err: BaseException, path: Path) -> None:
    """Turn a full disk or a refused write into :class:`OutputWriteError` naming ``path`` (the caller
    has removed its temp file; the previous ``path`` was never touched). One raised for a file inside
    a temp folder is renamed for the folder the user asked for. Other errors pass."""
    cause = err.__cause__ if isinstance(err, OutputWriteError) else err
    if isinstance(cause, OSError) and cause.errno in WRITE_ERRNOS:
        raise OutputWriteError(cause.errno, Errors.E410.format(path=path, err=cause.strerror or cause)) from cause


#: what a full disk, a quota or a read-only place raise while writing
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG})


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def honour_umask(root: Path) -> None:
    """Give every file and folder under ``root`` the mode the user's umask gives a new one.

    Why: libraries write some files 0600 (``model.safetensors`` through ``save_pretrained``, which
    goes through a private temp file), so a model folder shared with a group could not be read.
    Our own writers already honour the umask (:func:`_temp_beside`); this extends it to whatever a
    library wrote into one of our temp directories."""
    mask = current_umask()
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask | (os.stat(path).st_mode & 0o111 & ~mask))


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a temp directory that replaces ``path`` (whole) when the block ends without error.

    The old directory is renamed aside (not deleted) until the new one is in place, so no
    moment exists where a crash loses both.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(_temp_beside(path, directory=True)[1])
    old = tmp.with_name(tmp.name + ".old")
    try:
        yield tmp
        honour_umask(tmp)
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(Errors.E170.format(path=path))
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_write_error(err, path)
        raise


def recover_interrupted_write(path: PathLike) -> List[str]:
    """Undo what a killed writer of ``path`` left; returns what was done (for the log).

    A SIGKILL runs no ``except`` block, so :func:`atomic_open` / :func:`atomic_directory` may leave
    their hidden temp (``.name.<hex>.tmp``, a file or a folder, complete or not) and, when killed
    between their two renames, the previous folder renamed aside (``.name.<hex>.tmp.old``) with
    ``path`` absent. Looked for beside ``path`` (with its sidecars ``path.<suffix>``, e.g. a pairs
    file's ``.stats.json``, unless another run holds a sidecar's lock) and, when ``path`` is a folder
    written file by file (``train pretrain-data``), at its top level. The temps are removed; a folder
    aside is put back when its place is empty (the user's previous output is never lost) and removed
    otherwise.

    Call it only while holding ``path``'s lock (:func:`spacy_angel.locks.output_lock` does, when it
    takes over the lock of a killed run): a temp of a live writer would be removed under it.
    """
    path = Path(path)
    done = _tidy(path.parent, re.escape(path.name) + r"(?:\.[^/]+)?", path)
    if path.is_dir() and not path.is_symlink():
        done += _tidy(path, ".+", path)
    return done


def _tidy(folder: Path, name: str, own: Path) -> List[str]:
    """Tidy the temps in ``folder`` whose output's name matches ``name``; ``own``: the caller's output."""
    pattern = re.compile(r"\.(" + name + r")\.[0-9a-f]{12}\.tmp(\.old)?")
    try:
        found = [(p, pattern.fullmatch(p.name)) for p in folder.iterdir()]
    except OSError:
        return []
    done = []
    for left, match in sorted((f for f in found if f[1]), key=lambda f: (not f[1].group(2), f[0].name)):  # folders aside first
        target = folder / match.group(1)
        if target != own and _locked_elsewhere(folder / f".{match.group(1)}.lock"):
            continue
        if match.group(2) and not os.path.lexists(target):
            os.replace(left, target)
            done.append(f"restored {target} from {left.name}")
        elif left.is_dir() and not left.is_symlink():
            shutil.rmtree(left, ignore_errors=True)
            done.append(f"removed {left}")
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(left)
            done.append(f"removed {left}")
    return done


def _locked_elsewhere(lock: Path) -> bool:
    """Whether a live run holds ``lock`` (the lock file of :mod:`spacy_angel.locks`; it is not created)."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # drops the shared lock taken here


def iter_jsonl(path: PathLike, error: Type[Exception] = ValueError, make_error: Callable[..., Exception] = None) -> Iterator[Tuple[int, dict]]:
    """Yield ``(line number, object)`` for each non-blank line; a bad line raises ``error`` naming file and line."""
    path = Path(path)

    def fail(lineno: int, message: str) -> Exception:
        return make_error(path, lineno, message) if make_error else error(f"{path}:{lineno}: {message}")

    offset = 0
    with path.open("rb") as handle:  # bytes: a bad byte is reported with its line, not as a bare codec error
        for lineno, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise fail(lineno, Errors.E111.format(byte=raw[err.start], offset=offset + err.start)) from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise fail(lineno, Errors.E258.format(err=err.msg)) from None
            if not isinstance(rec, dict):
                raise fail(lineno, Errors.E259)
            yield lineno, rec


def user_cache_dir() -> Path:
    """The user's spacy-angel cache: ``$SPACY_ANGEL_CACHE``, by default ``~/.cache/spacy-angel`` (the main
    job's built model, the linker's dense name vectors)."""
    return Path(os.environ.get("SPACY_ANGEL_CACHE", "~/.cache/spacy-angel")).expanduser()
