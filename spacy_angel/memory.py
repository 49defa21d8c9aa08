"""Giving memory back to the OS in the middle of long builds (``kb build --ann`` at millions of names).

Why a module: a page the process touched once, or a heap block it freed, still counts in its RSS until it
is handed back, and the graph build's peak is what issue 27's 4 GB target measures.
"""
from __future__ import annotations

import numpy as np


def release_pages(*arrays: np.ndarray) -> int:
    """Drop this process's resident pages of the mapped ``arrays`` (``madvise(MADV_DONTNEED)``); returns how
    many mappings it released. In-memory arrays, and platforms without ``madvise``, are left as they are.

    Why: a pass over a mapped array (the ANN graph build reads every TF-IDF row once) keeps each page it
    touched resident, so the build's RSS grew by the whole matrix (2.2 GB at 6M names) although the pages
    were never needed again. They stay in the page cache; a later read maps them back without disk I/O.
    """
    import mmap as _mmap_module

    released = 0
    for array in arrays:
        mapping = getattr(array, "_mmap", None)  # np.memmap's own mmap object (slices share it)
        if mapping is None or mapping.closed or not hasattr(mapping, "madvise"):
            continue
        mapping.madvise(_mmap_module.MADV_DONTNEED)
        released += 1
    return released


def release_free_heap() -> bool:
    """Hand freed heap pages back to the OS (glibc's ``malloc_trim``); False where there is no glibc.

    Why: ``kb build`` holds the KB as Python objects while it writes its tables, and once freed glibc keeps
    much of that heap: at 1M names the trim gave back 112 of the 306 MB a process held after the TF-IDF fit.
    The graph build calls it first; at 6M names its peak did not move (4,340 -> 4,335 MB, the graph itself
    is the peak), so it lowers the RSS of the long graph phase, not the build's peak.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True
