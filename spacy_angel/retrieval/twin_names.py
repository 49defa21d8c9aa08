"""Names whose TF-IDF vectors are identical ("twins"): the ANN graph holds one node per vector.

Why: char_wb 3-grams never cross a word boundary, so names that differ only in word order ("breast
cancer", "cancer, breast" once normalised) have the same vector. 6.1% of MEDIC's 76,781 names are such
twins, 8.7% of the KB-scale bench's 6M names. In an HNSW graph an identical point is an insertion that
adds nothing but a node in its twins' neighbour lists. One node per vector, with the others listed here
and added back to every search hit, makes the graph 8.7% smaller at 6M names and returns the same names;
its build time and recall moved within the spread between builds of one setting (docs/performance.md).

Twins are found by an order-insensitive hash of each row's (3-gram, weight) pairs, then checked pair by
pair (rows list their 3-grams in the order the analyzer met them, which word order changes), so a hash
collision never merges two different vectors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Tuple

import numpy as np

from spacy_angel.memory import release_pages

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp


#: rows checked between releases of the mapped matrix's pages (each row read maps up to 64 kB per array)
RELEASE_EVERY = 8192


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0xFF51AFD7ED558CCD))


def row_hashes(matrix: "sp.csr_matrix", chunk: int = 1 << 16) -> np.ndarray:
    """An order-insensitive 64-bit hash per row: the sum of a mix of each (column, value bits) pair, and
    the row's length. Computed ``chunk`` rows at a time, the pages read released after each (at 6M names
    chunks of 1M rows held 1 GB of temporaries)."""
    out = np.zeros(matrix.shape[0], dtype=np.uint64)
    indptr = np.asarray(matrix.indptr, dtype=np.int64)
    for lo in range(0, matrix.shape[0], chunk):
        hi = min(matrix.shape[0], lo + chunk)
        a, b = int(indptr[lo]), int(indptr[hi])
        cols = np.asarray(matrix.indices[a:b]).astype(np.uint64)
        bits = np.asarray(matrix.data[a:b], dtype=np.float32).view(np.uint32).astype(np.uint64)
        with np.errstate(over="ignore"):
            mix = (cols * _MIX[0]) ^ (bits * _MIX[1])
            mix = (mix ^ (mix >> np.uint64(31))) * _MIX[2]
            sums = np.add.reduceat(np.concatenate([mix, [np.uint64(0)]]), (indptr[lo:hi] - a).clip(max=b - a))
            lengths = np.diff(indptr[lo : hi + 1]).astype(np.uint64)
            out[lo:hi] = np.where(lengths > 0, sums, 0) ^ (lengths * _MIX[0])
        release_pages(matrix.indices, matrix.data)  # read once: a mapped matrix stays out of RSS
    return out


def _canonical(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, row: int) -> Tuple[bytes, bytes]:
    """A row's (3-gram ids, weights) sorted by 3-gram id, as bytes: equal for equal vectors."""
    lo, hi = int(indptr[row]), int(indptr[row + 1])
    cols = indices[lo:hi]
    order = np.argsort(cols)  # a row lists each 3-gram once
    return cols[order].tobytes(), data[lo:hi][order].tobytes()


@dataclass(frozen=True)
class TwinTable:
    """``names[ptr[i]:ptr[i + 1]]`` have the same vector as name ``reps[i]`` (``reps`` ascending; each rep
    is the smallest name index of its vector). Names not listed are the only name of their vector."""

    reps: np.ndarray
    ptr: np.ndarray
    names: np.ndarray

    @classmethod
    def empty(cls) -> "TwinTable":
        return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))

    @classmethod
    def of(cls, matrix: "sp.csr_matrix") -> "TwinTable":
        """The twins among ``matrix``'s rows. A mapped matrix's pages are released as they are read: at 6M
        names (index loaded: 1,057 MB) the peak RSS was 3,893 MB with 1M-row hash chunks and the pages kept,
        2,908 MB with 65,536-row chunks, 2,160 MB (9 s) with the pages released every 8,192 rows checked,
        1,647 MB (13 s) every 1,024 (probes). Below the graph's own peak (3.2-3.4 GB) either way."""
        hashes = row_hashes(matrix)
        order = np.argsort(hashes, kind="stable")  # stable: the first of equal hashes is the smallest index
        sorted_hashes = hashes[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_hashes[1:] != sorted_hashes[:-1])))
        sizes = np.diff(np.concatenate((starts, [len(order)])))
        # plain arrays: slicing a memmap row by row costs more than the comparison
        indptr, indices, data = (np.asarray(a) for a in (matrix.indptr, matrix.indices, matrix.data))
        groups: Dict[int, list] = {}
        checked = 0
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            heads: Dict[Tuple[bytes, bytes], int] = {}  # distinct vectors under this hash (two only on a collision)
            for name in order[start : start + size].tolist():
                head = heads.setdefault(_canonical(indptr, indices, data, name), name)
                groups.setdefault(head, [])
                if head != name:
                    groups[head].append(name)
            checked += size
            if checked >= RELEASE_EVERY:  # rows scattered over the matrix: the kernel maps 64 kB around each
                release_pages(matrix.indices, matrix.data)
                checked = 0
        release_pages(matrix.indices, matrix.data)
        reps = np.array(sorted(r for r, twins in groups.items() if twins), dtype=np.int64)
        counts = np.array([len(groups[r]) for r in reps.tolist()], dtype=np.int64)
        ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        names = np.array([n for r in reps.tolist() for n in groups[r]], dtype=np.int64)
        return cls(reps, ptr, names)

    def check(self, num_names: int) -> None:
        """ValueError unless the table is well formed for a KB of ``num_names`` names (a damaged file)."""
        listed = np.concatenate([self.reps, self.names])
        if (len(self.ptr) != len(self.reps) + 1 or self.ptr[0] != 0 or self.ptr[-1] != len(self.names)
                or np.any(np.diff(self.ptr) < 1) or np.any(np.diff(self.reps) <= 0)
                or (len(listed) and (listed.min() < 0 or listed.max() >= num_names))):
            raise ValueError(f"its twin table does not fit a KB of {num_names} names")

    def is_rep_or_single(self, num_names: int) -> np.ndarray:
        """Mask of the names the graph holds: all but the listed twins."""
        keep = np.ones(num_names, dtype=bool)
        keep[self.names] = False
        return keep

    def expand(self, rows: np.ndarray, keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(rows, keys)`` plus, for every key that is a rep, its twins under the same row."""
        if not len(self.reps) or not len(keys):
            return rows, keys
        pos = np.searchsorted(self.reps, keys).clip(max=len(self.reps) - 1)
        hit = self.reps[pos] == keys
        if not hit.any():
            return rows, keys
        starts, ends = self.ptr[pos[hit]], self.ptr[pos[hit] + 1]
        counts = ends - starts
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        twins = self.names[np.repeat(starts, counts) + offsets]
        return np.concatenate([rows, np.repeat(rows[hit], counts)]), np.concatenate([keys, twins])
