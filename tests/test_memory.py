"""``memory.release_pages``: a pass over a mapped array need not stay in the process's RSS (the ANN
graph build reads every TF-IDF row once; at 6M names those pages were 2.2 GB of its peak)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from smaps import mapped_pages_kb
from spacy_angel.mapped_arrays import read_arrays, write_arrays
from spacy_angel.memory import release_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


def test_released_pages_leave_rss_and_the_values_stay(tmp_path) -> None:
    path = tmp_path / "big.safetensors"
    values = np.arange(8 << 20, dtype=np.float32)  # 32 MB
    write_arrays(path, {"values": values}, {})
    arrays, _ = read_arrays(path)
    mapped = arrays["values"]
    assert float(mapped.sum(dtype=np.float64)) == float(values.sum(dtype=np.float64))  # touches every page
    before = mapped_pages_kb(str(path))[0]
    assert before > 30_000, "the control: a full pass keeps the pages resident"
    assert release_pages(mapped, mapped[5:100]) == 2
    assert mapped_pages_kb(str(path))[0] < 1_000
    assert np.array_equal(mapped[::4096], values[::4096])  # readable again, from the page cache


def test_in_memory_arrays_are_left_alone(tmp_path) -> None:
    path = tmp_path / "small.safetensors"
    write_arrays(path, {"values": np.ones(10, dtype=np.int32)}, {})
    arrays, _ = read_arrays(path, mmap=False)
    assert release_pages(arrays["values"], np.zeros(3)) == 0
    assert arrays["values"].sum() == 10


_HEAP_SCRIPT = """
import psutil
from spacy_angel.memory import release_free_heap
process = psutil.Process()
start = process.memory_info().rss
blocks = [bytearray(1500) for _ in range(80_000)]  # ~120 MB of malloc'd blocks (pymalloc takes <= 512 B)
del blocks[:-1]  # the last one survives, so free() alone cannot shrink the heap's top
held = process.memory_info().rss
trimmed = release_free_heap()
print(start, held, process.memory_info().rss, trimmed)
"""


def test_free_heap_goes_back_to_the_os() -> None:
    """Many blocks freed at once stay in glibc's heap until the trim hands them back. In a fresh process:
    a long test session's heap has free room of its own, where the blocks would fit without growing."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", _HEAP_SCRIPT], capture_output=True, text=True, env=env, check=True)
    start, held, after, trimmed = out.stdout.split()
    assert int(held) > int(start) + (60 << 20), "the control: freed blocks stay in the process"
    assert trimmed == "True" and int(after) < int(held) - (60 << 20)
