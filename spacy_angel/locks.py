"""One writer per output: a command holds a lock beside each folder or file it writes, for its whole run.

Why beside, not inside: outputs are written to a temp sibling and renamed into place
(:mod:`spacy_angel.fileio`), so a lock file inside the folder would vanish with the rename. The lock
of ``out/model`` is ``out/.model.lock``.

Why ``fcntl.flock`` and not only an ``O_EXCL`` file: the kernel drops a flock when its process dies,
SIGKILL included, so a lock left by a killed run is free at once and the next run takes it over
(logging the dead holder that the file still names) without guessing from PIDs; what the killed run
left beside the output (its temp files, a previous folder it had renamed aside) is tidied then
(:func:`spacy_angel.fileio.recover_interrupted_write`). The file's JSON
(pid, host, start time, command) is what a refused second run reports. A lock on a network
filesystem without flock support is refused with a numbered error rather than ignored.

Readers (the spaCy component, ``link`` reading a model) take no lock.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Optional

from spacy_angel.errors import Errors, OutputLockedError, Warnings
from spacy_angel.fileio import recover_interrupted_write
from spacy_angel.types import PathLike

logger = logging.getLogger(__name__)


def lock_path(target: PathLike) -> Path:
    """Where the lock of ``target`` lives: a hidden sibling, ``parent/.name.lock``."""
    target = Path(target).absolute()
    return target.parent / f".{target.name}.lock"


def _holder(command: Optional[str]) -> Dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command if command is not None else " ".join(sys.argv),
    }


def read_holder(path: Path) -> Dict[str, object]:
    """The holder a lock file names ({} when it is empty or unreadable: a holder that died mid-write)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _open_locked(path: Path, target: Path) -> int:
    """An fd holding the flock of ``path``, re-opened until the file locked is the one at ``path``
    (a releasing holder unlinks it; a lock on an unlinked inode would guard nothing)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = read_holder(path)
                raise OutputLockedError(
                    Errors.E400.format(
                        target=target, lock=path, pid=holder.get("pid", "?"), host=holder.get("host", "?"),
                        started=holder.get("started", "?"), command=holder.get("command", "?"),
                    )
                ) from None
            raise OutputLockedError(Errors.E401.format(lock=path, err=err)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def output_lock(target: PathLike, command: Optional[str] = None) -> Iterator[Path]:
    """Hold ``target``'s lock for the ``with`` body; a second holder gets :class:`OutputLockedError`
    naming the first (pid, host, start time, command). ``command`` defaults to this process's argv."""
    target = Path(target).absolute()
    path = lock_path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file where a folder should be, a read-only place
        raise OutputLockedError(Errors.E401.format(lock=path, err=err)) from None
    fd = _open_locked(path, target)
    try:
        previous = read_holder(path)
        if previous:  # the file outlived its holder: a killed run (a released lock is unlinked)
            logger.warning(Warnings.W010.format(target=target, **{k: previous.get(k, "?") for k in ("pid", "host", "started", "command")}))
            for action in recover_interrupted_write(target):  # its temps; a previous folder it renamed aside
                logger.info("after the killed run: %s", action)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder(command)).encode("utf-8"))
        os.fsync(fd)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # closing drops the flock
