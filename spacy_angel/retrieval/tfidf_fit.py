"""Fitting the TF-IDF name matrix chunk by chunk: the same matrix as ``TfidfVectorizer.fit_transform``,
in bounded memory.

Why: scikit-learn's ``fit_transform`` gathers every name's column indices in one Python list (8 bytes per
non-zero before the arrays are made), then copies the matrix while weighting it. At 6M names (195M
non-zeros) that was the peak of ``kb build``: 5.5 GB (``bench/kb_scale.py``). Here:

1. one pass over the names with the vectoriser's own analyzer records each 3-gram's document
   frequency and first appearance;
2. idf from those frequencies, computed as ``TfidfTransformer.fit`` does (float32);
3. a second pass counts each chunk of names (scikit-learn's ``CountVectorizer.transform`` on the final
   vocabulary), puts each row's entries in the order ``fit_transform`` leaves them (first appearance:
   it fixes the float sums of the row norms) and weights them (``TfidfTransformer.transform``),
   straight into arrays allocated once for the whole matrix.

Both passes run in forked processes over contiguous ranges of names (one per core, from 200,000 names
on), writing into shared arrays: the analyzer is pure Python. Peak: the finished matrix plus one chunk
per process. The result equals ``fit_transform``'s bit for bit (a test compares them), so indexes and
rankings do not change; the cost is a second pass of the analyzer.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from spacy_angel.errors import Errors
from spacy_angel.mapped_arrays import index_dtype

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

#: names per chunk: ~1.6M non-zeros, ~100 MB of transient arrays per chunk (per process)
FIT_CHUNK = 50_000

#: names from which a fit forks one process per core by default (below, the fork costs more than it saves)
PARALLEL_FROM = 200_000


def fit_tfidf(names: Sequence[str], new_vectorizer: Callable[..., "TfidfVectorizer"],
              chunk: int = FIT_CHUNK, processes: Optional[int] = None) -> Tuple["TfidfVectorizer", "sp.csr_matrix"]:
    """``(vectorizer, matrix)`` as ``new_vectorizer().fit_transform(names)`` gives them (float32 CSR),
    with ``new_vectorizer(vocabulary=None)`` making an unfitted ``TfidfVectorizer``. ``processes``: both
    passes split the names into that many contiguous ranges, one forked process each (None: up to 4 on
    Linux from :data:`PARALLEL_FROM` names on, else 1); the result is the same bit for bit."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    analyze = new_vectorizer().build_analyzer()
    processes = default_processes(len(names)) if processes is None else max(1, int(processes))
    spans = _spans(len(names), processes)
    # pass 1: document frequency and first appearance of every term. fit_transform keeps each row's
    # entries in first-appearance order of their terms (it counts with ids in that order, then renames
    # them alphabetically without re-sorting); the row norms are summed in that order, so we keep it.
    # The ranges' own first-appearance lists, joined in range order, give the order of one pass.
    first: Dict[str, int] = {}
    df: Dict[str, int] = {}
    span_nnz = []
    with _Workers(processes, names=names, analyze=analyze) as workers:
        for order, counts, nnz in workers.map(_count_terms, spans):
            for term in order:
                if term not in first:
                    first[term] = len(first)
            for term, n in counts.items():
                df[term] = df.get(term, 0) + n
            span_nnz.append(nnz)
    rows, nnz = len(names), sum(span_nnz)
    if not rows:
        raise ValueError(Errors.E210)
    terms = sorted(df)  # CountVectorizer's own column order
    vocabulary = {t: i for i, t in enumerate(terms)}
    idf = _idf(np.array([df[t] for t in terms], dtype=np.int64), rows)
    counter = CountVectorizer(analyzer=analyze, vocabulary=vocabulary, dtype=np.float32)
    weigher = TfidfTransformer(norm="l2", use_idf=True, smooth_idf=True)
    weigher.idf_, weigher.n_features_in_ = idf, len(terms)
    # pass 2: each range's rows, chunk by chunk, reordered as fit_transform orders them and weighted
    # into arrays allocated once for the whole matrix (shared with the forked processes)
    positions = index_dtype(nnz, len(terms), rows)
    data, indices = _empty(nnz, np.float32, processes), _empty(nnz, positions, processes)
    indptr = _empty(rows + 1, positions, processes)
    indptr[0] = 0
    rank = np.array([first[t] for t in terms], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(span_nnz)]).tolist()
    state = dict(names=names, counter=counter, weigher=weigher, rank=rank, chunk=chunk, data=data,
                 indices=indices, indptr=indptr)
    with _Workers(processes, **state) as workers:
        written = workers.map(_weigh_rows, [(lo, hi, at) for (lo, hi), at in zip(spans, offsets)])
    if written != span_nnz:  # the analyzer gave other terms the second time: a bug, not bad input
        raise RuntimeError(f"TF-IDF fit: pass 2 wrote {written} entries per range, pass 1 counted {span_nnz}")
    vectorizer = new_vectorizer(vocabulary)
    vectorizer.idf_ = idf
    matrix = sp.csr_matrix((rows, len(terms)), dtype=np.float32)
    matrix.data, matrix.indices, matrix.indptr = data, indices, indptr
    return vectorizer, matrix


def default_processes(num_names: int, cores: Optional[int] = None) -> int:
    """Forked processes for a fit of ``num_names``: one per core (of ``cores``, default all), at most 4, from
    :data:`PARALLEL_FROM` names on, where fork is the start method (Linux); else 1. 1 as well in a daemonic
    process (an ``nlp.pipe(n_process=N)`` worker fitting a missing index), which may not have children."""
    import multiprocessing
    import os
    import sys

    if num_names < PARALLEL_FROM or not sys.platform.startswith("linux") or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0)), cores or 4))


def _count_terms(span: Tuple[int, int]) -> Tuple[List[str], Dict[str, int], int]:
    """Pass 1 over names ``[lo, hi)``: their terms in first-appearance order, document frequencies, and
    the number of matrix entries (distinct terms per name, summed)."""
    analyze = _STATE["analyze"]
    first: Dict[str, None] = {}  # a dict keeps insertion order
    df: Dict[str, int] = {}
    nnz = 0
    for name in _between(_STATE["names"], *span):
        features = analyze(name)
        seen = set(features)
        for term in features:
            if term not in first:
                first[term] = None
        for term in seen:
            df[term] = df.get(term, 0) + 1
        nnz += len(seen)
    return list(first), df, nnz


def _weigh_rows(task: Tuple[int, int, int]) -> int:
    """Pass 2 over names ``[lo, hi)``, whose entries start at ``at``: counts per chunk, put in
    fit_transform's order, weighted, written into the shared arrays; returns the entries written."""
    import scipy.sparse as sp

    lo, hi, at = task
    state = _STATE
    rank, data, indices, indptr = state["rank"], state["data"], state["indices"], state["indptr"]
    row, pos = lo, at
    for texts in _chunks(_between(state["names"], lo, hi), state["chunk"]):
        counts = sp.csr_matrix(state["counter"].transform(texts), dtype=np.float32)
        row_of = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        order = np.lexsort((rank[counts.indices], row_of))
        counts.indices, counts.data = counts.indices[order], counts.data[order]
        counts.has_sorted_indices = False
        part = sp.csr_matrix(state["weigher"].transform(counts, copy=False), dtype=np.float32)
        data[pos : pos + part.nnz] = part.data
        indices[pos : pos + part.nnz] = part.indices
        indptr[row + 1 : row + 1 + part.shape[0]] = part.indptr[1:] + pos
        row, pos = row + part.shape[0], pos + part.nnz
    return pos - at


#: what the workers read; set before they fork (nothing is pickled to them but the ranges). One fit at a
#: time per process holds it (the lock), so fits in two threads do not mix their state.
_STATE: Dict[str, Any] = {}
_STATE_LOCK = threading.Lock()


class _Workers:
    """``map`` over ranges in ``processes`` forked processes that inherit ``state`` (or here, for one).

    Why fork and shared arrays: the names (a mapped KB) and the output arrays reach the workers without
    being copied or pickled, and only small results (term lists and counts) come back. The analyzer is
    pure Python, so the passes used one core: at 6M names 60 s and 107 s of the 241 s `kb build` spent
    before the graph."""

    def __init__(self, processes: int, **state: Any) -> None:
        self.processes, self.state, self.pool = processes, state, None

    def __enter__(self) -> "_Workers":
        _STATE_LOCK.acquire()
        _STATE.clear()
        _STATE.update(self.state)
        if self.processes > 1:
            import multiprocessing
            import os

            try:
                self.pool = multiprocessing.get_context("fork").Pool(
                    self.processes, initializer=_die_with_parent, initargs=(os.getpid(),))
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def map(self, fn: Callable[[Any], Any], tasks: List[Any]) -> List[Any]:
        if self.pool is None:
            return [fn(task) for task in tasks]
        return self.pool.map(fn, tasks, chunksize=1)

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.close() if exc[0] is None else self.pool.terminate()
            self.pool.join()
        _STATE.clear()
        _STATE_LOCK.release()


def _die_with_parent(parent: int) -> None:
    """In a worker: be killed when the process that forked it dies (Linux ``PR_SET_PDEATHSIG``). Why: a
    ``kb build`` killed mid-fit would otherwise leave its workers waiting on their task pipe for ever
    (the siblings hold its write end open), each holding its share of the matrix."""
    import ctypes
    import os
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def _spans(rows: int, parts: int) -> List[Tuple[int, int]]:
    """``parts`` contiguous ranges covering ``[0, rows)`` (fewer when there are fewer rows)."""
    edges = np.linspace(0, rows, max(1, min(parts, rows)) + 1).astype(np.int64).tolist()
    return list(zip(edges[:-1], edges[1:])) or [(0, 0)]


def _empty(length: int, dtype: Any, processes: int) -> np.ndarray:
    """An uninitialised array; with several processes in shared anonymous memory, so forked workers'
    writes reach this process (``MAP_SHARED``)."""
    if processes == 1:
        return np.empty(length, dtype=dtype)
    import mmap

    size = length * np.dtype(dtype).itemsize
    return np.frombuffer(mmap.mmap(-1, max(size, 1)), dtype=dtype, count=length)


def _between(names: Sequence[str], lo: int, hi: int) -> Iterator[str]:
    """Names ``[lo, hi)`` by iteration: a mapped KB's (``MappedStrings.iter_range``) decodes many names per
    call and none before ``lo`` (skipping by iteration decoded every earlier name, in both passes)."""
    iter_range = getattr(names, "iter_range", None)
    if iter_range is not None:
        return iter_range(lo, hi)
    import itertools

    return itertools.islice(iter(names), lo, hi)


def _idf(df: np.ndarray, n_samples: int) -> np.ndarray:
    """``TfidfTransformer.fit``'s smoothed idf for float32 counts: ln((n + 1) / (df + 1)) + 1."""
    smoothed = df.astype(np.float32) + np.float32(1.0)
    idf = np.full_like(smoothed, fill_value=n_samples + 1, dtype=np.float32)
    idf /= smoothed
    np.log(idf, out=idf)
    idf += 1.0
    return idf


def _chunks(names: Iterable[str], size: int) -> Iterator[List[str]]:
    batch: List[str] = []
    for name in names:  # iteration, not slicing: a mapped KB decodes many names per call
        batch.append(name)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
