"""Reading this process's ``/proc/self/smaps`` (Linux): what the memory tests measure.

A module of its own, without heavy imports, so the tests and the worker processes they start (see
``conftest.mapped_pages_of_two_processes``) share one reader.
"""
from __future__ import annotations

from typing import Tuple


def mapped_pages_kb(suffix: str) -> Tuple[int, int]:
    """``(Rss, Pss)`` kB of this process's mappings of files whose names end with ``suffix``."""
    rss = pss = 0
    with open("/proc/self/smaps") as fh:
        mapped = False
        for line in fh:
            if "-" in line.split(" ")[0] and len(line.split()) >= 5:  # a mapping's header line
                mapped = line.rstrip().endswith(suffix)
            elif mapped and line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif mapped and line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss
