"""Reading a saved TF-IDF index's arrays: v2 ``tfidf.safetensors`` (mapped), v1 ``tfidf.npz`` (in memory).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, Tuple

import numpy as np

from spacy_angel.mapped_arrays import read_arrays
from spacy_angel.memory import release_pages

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp


INDEX_ARRAYS = "tfidf.safetensors"


LEGACY_INDEX_ARRAYS = "tfidf.npz"  # format version 1: read (into memory), no longer written


def read_index_arrays(d: Path, version: int, mmap: bool) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """The arrays and metadata of a saved index: v2 ``tfidf.safetensors`` (mapped), v1 ``tfidf.npz``."""
    if version == 1:
        with np.load(d / LEGACY_INDEX_ARRAYS, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("idf", "data", "indices", "indptr")}
            return arrays, {"kb_fingerprint": str(z["kb_fingerprint"])}
    return read_arrays(d / INDEX_ARRAYS, mmap=mmap)


def consistent_csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, rows: int, cols: int) -> bool:
    """Whether the arrays make a ``rows x cols`` CSR matrix whose column indices are all in range (SciPy's
    products do not check them). The check reads every index once, and mapped pages read stay resident:
    at 6M names that was 1.5 GB of a just-loaded index's RSS (of 2.9 GB), so they are released after it
    (they stay in the page cache; a query maps back the few it needs)."""
    if not (len(indptr) == rows + 1 and int(indptr[-1]) == len(data) and len(indices) == len(data)):
        return False
    in_range = not len(indices) or (int(indices.min()) >= 0 and int(indices.max()) < cols)
    release_pages(indices)
    return bool(in_range)


def csr_over(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: Tuple[int, int]) -> "sp.csr_matrix":
    """A CSR matrix over the given (possibly mapped) arrays, without copying them: SciPy keeps arrays
    whose dtypes it accepts, so mapped pages stay shared between processes."""
    import scipy.sparse as sp

    matrix = sp.csr_matrix(shape, dtype=np.float32)
    matrix.data, matrix.indices, matrix.indptr = data, indices, indptr
    return matrix
