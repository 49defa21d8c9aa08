"""Make a process that has run the linker safe to ``fork`` (``nlp.pipe(texts, n_process=2)``).

Why: spaCy's ``Language.pipe(n_process=N)`` starts its workers with ``multiprocessing``'s default
start method, which is ``fork`` on Linux (Python < 3.14). A forked child inherits the parent's
memory but none of its threads. Two thread pools of our stack do not survive that:

* torch's intra-op pool. The pip CPU wheels use GNU OpenMP (``libgomp``), which keeps the state
  of its worker team in process memory. Once the parent has run one parallel region (any layer
  norm or matmul on a non-trivial batch), the child's first parallel region waits on a barrier
  for team threads that do not exist in it: ``gomp_team_barrier_wait_end``, a futex wait that
  never returns. libgomp has no way to rebuild its team after fork.
* the Rust ``tokenizers`` Rayon pool. ``tokenizers`` notices the fork itself and turns its
  parallelism off in the child, but prints a warning per worker unless
  ``TOKENIZERS_PARALLELISM`` is set.

The fix is what torch's own ``DataLoader`` workers do: a forked child runs torch on one thread
(``torch.set_num_threads(1)`` before any torch op), which never enters an OpenMP parallel region,
so the stale team is never touched. ``n_process`` workers on one thread each is also the
division of cores spaCy users expect. For ``tokenizers`` we set ``TOKENIZERS_PARALLELISM=false``
for the child only: set just before the fork and restored in the parent right after it.

Processes started with ``spawn`` or ``forkserver`` start clean and need none of this.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from spacy_angel.pipeline.pipe_watchdog import watch_forked_workers

TOKENIZERS_ENV = "TOKENIZERS_PARALLELISM"


_installed = False


_env_set_for_fork: Optional[str] = None


def _before_fork() -> None:
    """In the parent, just before ``fork``: the child inherits ``TOKENIZERS_PARALLELISM=false``."""
    global _env_set_for_fork
    if TOKENIZERS_ENV not in os.environ:
        os.environ[TOKENIZERS_ENV] = "false"
        _env_set_for_fork = TOKENIZERS_ENV


def _after_fork_in_parent() -> None:
    """In the parent, right after ``fork``: its own environment is as it was, and a watcher turns a
    killed ``nlp.pipe`` worker into an error instead of a hang (:mod:`.pipe_watchdog`)."""
    global _env_set_for_fork
    if _env_set_for_fork is not None:
        os.environ.pop(_env_set_for_fork, None)
        _env_set_for_fork = None
    watch_forked_workers()


def _after_fork_in_child() -> None:
    """In the child, before it runs any Python: torch on one thread (no stale OpenMP team)."""
    global _env_set_for_fork
    _env_set_for_fork = None  # the child keeps the variable: its tokenizers stay serial
    torch = sys.modules.get("torch")  # a child of a process that never imported torch has nothing to fix
    if torch is not None and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


def install_fork_hooks() -> None:
    """Register the ``os.register_at_fork`` hooks once per process (idempotent; no-op without fork)."""
    global _installed
    if _installed or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
    _installed = True
