"""Bounded LRU caches of linking results, and the batches results are computed in.

Why a room: the beam mode and the hybrid mode keep results per encoded input the same way (a
repeated mention in a corpus is decoded once), and both walk their unique inputs in batches with
an optional progress bar. Shared here, so :mod:`spacy_angel.linking.hybrid` needs nothing of
:class:`~spacy_angel.linking.linker.AngelLinker` but the parts it is handed.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, Sequence


class ResultCache(OrderedDict):
    """An LRU dict holding at most ``size`` results (``size <= 0``: holds nothing)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: Any, result: Any) -> None:
        if self.size <= 0:
            return
        self[key] = result
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def batches(items: Sequence[Any], batch_size: int, desc: str, progress: bool) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``batch_size``; a tqdm bar over the batches when ``progress``."""
    starts: Any = range(0, len(items), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    for lo in starts:
        yield items[lo : lo + batch_size]
