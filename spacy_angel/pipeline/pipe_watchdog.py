"""``nlp.pipe(texts, n_process=N)`` with ``angel_linker`` in the pipeline: a worker that dies raises an
error in the caller instead of leaving it blocked for ever.

Why: spaCy 3.8 reads each worker's results from a pipe whose end never comes when that worker is killed
(its siblings hold copies of the pipe; see :mod:`spacy_angel.pipeline.worker_pipe`), so the caller waits
for good. No component runs in the caller's process while it waits, so this watches from the side:

* when the caller (its main thread) forks spaCy's workers, the fork hook of
  :mod:`spacy_angel.pipeline.fork_safety` notes the ``multiprocessing.Process`` being started, if the
  fork comes from spaCy's ``Language._multiprocessing_pipe`` (read from the call stack: ``Process.start``
  drops its target before the process can be inspected), and starts a daemon thread that polls those
  workers twice a second;
* when one of them has been killed by a signal, the thread sends ``SIGUSR1`` to the main thread, whose
  handler raises :class:`~spacy_angel.errors.WorkerDiedError` ``[E431]``; the blocked read is interrupted,
  the exception leaves ``nlp.pipe`` (spaCy's own clean-up then stops the other workers), and the caller
  sees which worker died and how.

The handler is only installed where ``SIGUSR1`` has no handler of the user's (``SIG_DFL``); it ignores a
``SIGUSR1`` it did not ask for (where the default would have ended the process). Workers that exit
normally, and children that are not spaCy's pipe workers, are never acted on.
"""
from __future__ import annotations

import multiprocessing.process
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from spacy_angel.errors import Errors, WorkerDiedError

POLL_SECONDS = 0.5
_SIGNAL = getattr(signal, "SIGUSR1", None)

_lock = threading.Lock()
_thread: Optional[threading.Thread] = None
_dead: Dict[str, Any] = {}  # what the watcher found, for the handler
_started: List[Any] = []  # spaCy pipe workers whose fork the hook saw, not yet watched


def _spacy_worker_being_started() -> Optional[Any]:
    """The ``multiprocessing.Process`` whose ``start`` is forking now, if spaCy's pipe started it."""
    frame = sys._getframe(2)
    process = None
    while frame is not None:
        code = frame.f_code
        candidate = frame.f_locals.get("self") if code.co_name == "start" else None
        if process is None and isinstance(candidate, multiprocessing.process.BaseProcess):
            process = candidate
        if code.co_name == "_multiprocessing_pipe" and "spacy" in code.co_filename:
            return process
        frame = frame.f_back
    return None


def _handler(signum: int, frame: Any) -> None:
    found = _dead.pop("found", None)
    if found is not None:
        raise WorkerDiedError(Errors.E431.format(**found))


def _watch() -> None:
    """Poll spaCy's workers until none is left; signal the main thread when one was killed."""
    global _thread
    watched: Dict[int, Any] = {}
    idle = 0
    while idle < 4:
        for process in list(_started):
            if process.pid is not None:  # set once its Popen has returned
                _started.remove(process)
                watched[process.pid] = process
        for pid, process in list(watched.items()):
            code = process.exitcode
            if code is None:
                continue
            del watched[pid]
            if code < 0:  # killed by a signal (a SIGKILL from the OOM killer, most often)
                try:
                    how = f"killed by {signal.Signals(-code).name}"
                except ValueError:
                    how = f"killed by signal {-code}"
                _dead["found"] = {"pid": pid, "how": how}
                signal.pthread_kill(threading.main_thread().ident, _SIGNAL)
        idle = 0 if watched or _started else idle + 1
        time.sleep(POLL_SECONDS)
    with _lock:
        _thread = None


def watch_forked_workers() -> None:
    """Called in the parent right after a fork: start the watcher (once), from the main thread only."""
    global _thread
    if _SIGNAL is None or threading.current_thread() is not threading.main_thread():
        return
    process = _spacy_worker_being_started()
    if process is None:
        return
    current = signal.getsignal(_SIGNAL)
    if current is not _handler:
        if current is not signal.SIG_DFL:
            return  # the user's own SIGUSR1 handler: leave it alone (and the hang with it)
        signal.signal(_SIGNAL, _handler)
    with _lock:
        _started.append(process)
        if _thread is None:
            _thread = threading.Thread(target=_watch, name="spacy-angel-pipe-watchdog", daemon=True)
            _thread.start()
