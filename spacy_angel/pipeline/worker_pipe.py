"""``nlp.pipe`` on several processes that fails, instead of hanging, when a worker process dies.

What spaCy 3.8 does: ``nlp.pipe(texts, n_process=N)`` forks N workers and reads their results from one
pipe each (``Language._multiprocessing_pipe``). When a worker is killed (``SIGKILL``, most often the
kernel's out-of-memory killer) the caller blocks for ever, using no CPU: it waits on the dead worker's
pipe, and that pipe never reports its end because every sibling worker, forked while the parent still
held all the pipes' write ends, holds a copy of it; the siblings in turn wait for texts the blocked
parent never sends. With ``angel_linker`` in the pipeline, :mod:`spacy_angel.pipeline.pipe_watchdog`
watches spaCy's workers from the caller's side and raises ``[E431]`` instead (where ``SIGUSR1`` is free;
``tests/pipeline/test_dying_workers.py``); a pipeline without it keeps spaCy's behaviour.

:func:`pipe_in_processes` runs the same pipeline on a :class:`concurrent.futures.ProcessPoolExecutor`,
whose manager thread watches every worker's process sentinel: when one dies abruptly the pool is
marked broken, the other workers are stopped, and the caller gets :class:`~spacy_angel.errors.WorkerDiedError`
``[E430]`` naming the worker and its signal within a second or so. The docs come back in input order, with
their annotations (entities, ``kb_id_``, the ``._`` extensions), as from ``nlp.pipe``. The pipeline
reaches the workers by ``fork`` (never pickled); where ``fork`` is not available (Windows) this falls back to
spaCy's own ``nlp.pipe(n_process=...)``. An exception raised by a component in a worker is raised again in
the caller, as with ``n_process=1``.
"""
from __future__ import annotations

import itertools
import multiprocessing
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Deque, Dict, Iterable, Iterator, List

from spacy.tokens import Doc

from spacy_angel.errors import Errors, WorkerDiedError

# pipelines by token, set before the pool forks: the workers inherit them (nothing is pickled)
_PIPELINES: Dict[int, Any] = {}
_tokens = itertools.count()


def _run_batch(token: int, texts: List[str]) -> List[bytes]:
    """In a worker: the batch through the inherited pipeline, each doc as ``Doc.to_bytes`` (msgpack)."""
    nlp = _PIPELINES[token]
    return [doc.to_bytes() for doc in nlp.pipe(texts)]


def _how(process: Any) -> str:
    code = process.exitcode
    if code is None:
        return f"pid {process.pid}"
    if code < 0:
        try:
            return f"pid {process.pid}, killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"pid {process.pid}, killed by signal {-code}"
    return f"pid {process.pid}, exit code {code}"


def pipe_in_processes(nlp: Any, texts: Iterable[str], *, n_process: int = 2, batch_size: int = 32) -> Iterator[Doc]:
    """``nlp.pipe(texts, n_process=n_process, batch_size=batch_size)``, raising ``[E430]`` when a worker dies.

    ``texts`` may be a generator (it is read as the workers need it: at most ``2 * n_process`` batches
    are in flight). ``n_process=1`` is ``nlp.pipe`` in this process.
    """
    if n_process < 1:
        raise ValueError(Errors.E115.format(option="n_process", value=n_process))
    if n_process == 1:
        yield from nlp.pipe(texts, batch_size=batch_size)
        return
    if "fork" not in multiprocessing.get_all_start_methods():
        yield from nlp.pipe(texts, n_process=n_process, batch_size=batch_size)
        return
    token = next(_tokens)
    _PIPELINES[token] = nlp
    pool = ProcessPoolExecutor(n_process, mp_context=multiprocessing.get_context("fork"))
    workers: Dict[int, Any] = {}
    pending: Deque[Future] = deque()
    returned = 0
    texts = iter(texts)
    try:
        while True:
            batch = list(itertools.islice(texts, batch_size))
            if batch:
                pending.append(pool.submit(_run_batch, token, batch))
                workers.update(getattr(pool, "_processes", None) or {})  # to name the one that dies
            while pending and (len(pending) >= 2 * n_process or not batch):
                for data in pending.popleft().result():
                    yield Doc(nlp.vocab).from_bytes(data)
                    returned += 1
            if not batch:
                break
    except BrokenProcessPool as err:
        pool.shutdown(wait=True, cancel_futures=True)  # the pool has stopped the others; reap them all
        dead = [p for p in workers.values() if p.exitcode not in (None, 0, -signal.SIGTERM)] or list(workers.values())
        raise WorkerDiedError(Errors.E430.format(
            n=n_process, how="; ".join(_how(p) for p in dead) or "unknown", docs=returned,
        )) from err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _PIPELINES.pop(token, None)
