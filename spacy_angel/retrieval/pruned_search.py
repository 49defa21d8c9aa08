"""Top-k TF-IDF names through posting lists of each query's heaviest 3-grams, then exact re-scoring.

Why: exact retrieval (:meth:`NameIndex.nearest_names` with ``search="exact"``) multiplies every query
by the whole name matrix, so its cost grows with the KB (414 queries/s at 76k names, 28 at 2M). A
char 3-gram query has about 15 terms of similar weight; its best names must share most of the
query's *heavy* (rare, high-idf) terms. So:

1. per query, keep the heaviest terms until they hold ``query_mass`` of its squared weight (the
   light, common 3-grams such as "ion" or " ca" have the longest posting lists and add little);
2. partial scores from those terms' posting lists (the term-major copy of the name matrix, saved
   beside the KB), one sparse product per query chunk;
3. the ``rescore_depth`` names with the best partial scores get their exact cosine, and the top ``k``
   of them are returned, ties on the smaller name index as in exact search.

This is approximate: a name that shares only light terms with the query can be missed. Its recall
of the exact top-20 is measured by ``bench/kb_scale.py`` (``docs/performance.md``), not assumed;
with ``query_mass=1.0`` and ``rescore_depth`` at least the number of names sharing a term it equals
exact search. It is NOT sublinear: posting lists lengthen with the KB, and on the bench's KBs (MEDIC
plus word-shuffled variants) it was 1.2-1.4x exact search up to 1M names, equal at 2M and half as
fast at 6M, where the partial-score matrix of a query chunk holds millions of entries. Hence opt-in
(``spacy_angel.tfidf_retriever.v2``, ``search="pruned"``). Written on SciPy's sparse products. For
millions of names use ``search="ann"`` (:mod:`.ann_search`), which re-scores with :func:`rescore_pairs`
and :func:`best_merged` from here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, List, Tuple

import numpy as np

from spacy_angel.mapped_arrays import StreamedArray
from spacy_angel.retrieval.exact_search import best_with_ties, keep_top_k

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp


#: term ranges at most this wide are sorted by 16-bit keys (9.4M entries, the 6M-name index's range: 0.18 vs 1.07 s)
RADIX_SORTED_TERMS = 1 << 16


def term_postings(matrix: "sp.csr_matrix") -> "sp.csr_matrix":
    """The term-major copy of the (names x terms) matrix: row ``t`` lists the names holding term ``t``."""
    import scipy.sparse as sp

    return sp.csr_matrix(matrix.T, dtype=np.float32)


def streamed_postings(matrix: "sp.csr_matrix", index_dtype: type, *, term_ranges: int = 16,
                      row_chunk: int = 1 << 20) -> Tuple[np.ndarray, StreamedArray, StreamedArray]:
    """``(indptr, data, indices)`` of :func:`term_postings`' matrix, its two long arrays produced range of
    terms by range of terms while they are written (:class:`~spacy_angel.mapped_arrays.StreamedArray`).

    Why: the transpose is a second copy of the name matrix (1.56 GB at 6M names), and holding both was
    the peak of ``kb build`` (3,974 MB). Each range of terms holds about 1/``term_ranges`` of it; the
    cost is a scan of the matrix per range and array (seconds at 6M names). Same arrays as
    :func:`term_postings` (names ascending within a term).
    """
    counts = np.zeros(matrix.shape[1], dtype=np.int64)
    for lo in range(0, matrix.nnz, 1 << 24):  # bincount copies int32 input to int64: 1.56 GB at once at 6M names
        counts += np.bincount(np.asarray(matrix.indices[lo : lo + (1 << 24)]), minlength=matrix.shape[1])
    total = np.cumsum(counts)
    indptr = np.concatenate([[0], total]).astype(index_dtype)
    cuts = np.searchsorted(total, np.linspace(0, matrix.nnz, term_ranges + 1)[1:-1], side="left")
    edges = np.unique(np.concatenate([[0], cuts + 1, [matrix.shape[1]]]).clip(0, matrix.shape[1]))
    spans = list(zip(edges[:-1].tolist(), edges[1:].tolist()))

    def pieces(field: str) -> Iterator[np.ndarray]:
        ptr, cols, vals = matrix.indptr, matrix.indices, matrix.data
        n = matrix.shape[0]
        for lo, hi in spans:
            terms, values = [], []
            for r0 in range(0, n, row_chunk):
                r1 = min(n, r0 + row_chunk)
                a, b = int(ptr[r0]), int(ptr[r1])
                chunk = cols[a:b]
                at = np.flatnonzero((chunk >= lo) & (chunk < hi))
                terms.append(chunk[at])
                if field == "data":
                    values.append(vals[a:b][at])
                else:  # the row (name) of each entry
                    values.append((np.searchsorted(ptr[r0 : r1 + 1], at + a, side="right") - 1 + r0).astype(index_dtype))
            if not terms:  # a matrix without rows
                continue
            keys = np.concatenate(terms) - lo
            if hi - lo <= RADIX_SORTED_TERMS:  # NumPy radix-sorts 16-bit keys: 5.9x faster than int32's stable sort
                keys = keys.astype(np.uint16)
            order = np.argsort(keys, kind="stable")  # rows stay ascending within a term
            yield np.concatenate(values)[order]

    nnz = int(matrix.nnz)
    return (indptr, StreamedArray(nnz, np.dtype(np.float32), lambda: pieces("data")),
            StreamedArray(nnz, np.dtype(index_dtype), lambda: pieces("indices")))


def keep_terms(queries: "sp.csr_matrix", choose: Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, int]]
               ) -> "sp.csr_matrix":
    """``queries`` keeping, per non-empty row, the first ``keep`` of its terms in ``order``, where ``(order, keep)
    = choose(weights, term ids)`` of that row. Works on copies: ``eliminate_zeros`` edits arrays in place."""
    import scipy.sparse as sp

    data = queries.data.copy()
    for row in range(queries.shape[0]):
        lo, hi = int(queries.indptr[row]), int(queries.indptr[row + 1])
        if hi > lo:
            order, keep = choose(data[lo:hi], queries.indices[lo:hi])
            data[lo:hi][order[keep:]] = 0.0
    kept = sp.csr_matrix((data, queries.indices.copy(), queries.indptr.copy()), shape=queries.shape)
    kept.eliminate_zeros()
    return kept


def heavy_terms(queries: "sp.csr_matrix", query_mass: float) -> "sp.csr_matrix":
    """``queries`` keeping, per row, its heaviest terms until they hold ``query_mass`` of the row's
    squared weight (at least one term)."""

    def heaviest(weights: np.ndarray, _: np.ndarray) -> Tuple[np.ndarray, int]:
        order = np.argsort(-weights, kind="stable")
        held = np.cumsum(weights[order].astype(np.float64) ** 2)
        return order, int(np.searchsorted(held, query_mass * held[-1] - 1e-12)) + 1

    if query_mass >= 1.0:  # every term (a copy, as callers expect)
        kept = queries.copy()
        kept.eliminate_zeros()
        return kept
    return keep_terms(queries, heaviest)


def pruned_nearest(
    queries: "sp.csr_matrix",
    matrix: "sp.csr_matrix",
    postings: "sp.csr_matrix",
    k: int,
    *,
    query_mass: float,
    rescore_depth: int,
) -> List[List[Tuple[int, float]]]:
    """Top-``k`` ``(name index, cosine)`` per query row, best first, cosine > 0 (see the module doc)."""
    m = queries.shape[0]
    if k <= 0 or m == 0:
        return [[] for _ in range(m)]
    out = _search(queries, matrix, postings, k, query_mass, rescore_depth)
    short = [r for r, hits in enumerate(out) if len(hits) < k] if query_mass < 1.0 else []
    if short:  # fewer than k names share a heavy 3-gram: the light ones may add some (as exact search would)
        for r, hits in zip(short, _search(queries[short], matrix, postings, k, 1.0, rescore_depth)):
            out[r] = hits
    return out


def _search(queries: "sp.csr_matrix", matrix: "sp.csr_matrix", postings: "sp.csr_matrix", k: int,
            query_mass: float, rescore_depth: int) -> List[List[Tuple[int, float]]]:
    partial = (heavy_terms(queries, query_mass) @ postings).tocsr()
    row_of, name_of = best_partial(partial, max(int(rescore_depth), k))
    return rescore_pairs(queries, matrix, row_of, name_of, k)


def best_partial(partial: "sp.csr_matrix", depth: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(query row, name index)`` of each row's ``depth`` best names by partial score (all when fewer)."""
    rows, cols = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for row in range(partial.shape[0]):
        lo, hi = partial.indptr[row], partial.indptr[row + 1]
        names = _best(partial.indices[lo:hi], partial.data[lo:hi], depth)
        rows.append(np.full(len(names), row, dtype=np.int64))
        cols.append(names)
    return np.concatenate(rows), np.concatenate(cols)


def best_merged(weights: "sp.csr_matrix", postings: "sp.csr_matrix", depth: int) -> Tuple[np.ndarray, np.ndarray]:
    """What ``best_partial(weights @ postings, depth)`` gives (up to ties at the cut), for a few short posting
    lists per row in a KB of millions of names (ANN search's rare 3-grams).

    Why not SciPy's product there: ``csr_matmat`` scatters into an accumulator with a slot per name, in two
    passes, so each call pays for all names. Each posting list is sorted by name: gathering a row's lists
    and a stable sort (which merges sorted runs) puts each name's terms side by side, and the sums add
    them in the same order. Measured on the KB-scale bench's KBs (NCBI-disease dev queries): 512 queries'
    rare 3-grams (50,000 postings each) took 3.0-3.6 s with SciPy and 0.52-0.60 s merged at 6M names,
    0.41-0.51 vs 0.32-0.35 s for 256 queries at 1M. For long lists (pruned search's heavy 3-grams) the
    product wins (2.5-3.9 s vs 5.0 s for 256 queries at 1M names), so pruned search keeps it."""
    rows, cols = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    # plain views of the (mapped) arrays: each slice of an np.memmap runs its Python __getitem__ and
    # __array_finalize__, 0.035 of 1.0 s for 787 queries at 6M names (cProfile)
    indptr, indices, data = (np.asarray(a) for a in (postings.indptr, postings.indices, postings.data))
    for row in range(weights.shape[0]):
        lo, hi = weights.indptr[row], weights.indptr[row + 1]
        if lo == hi:
            continue
        terms = weights.indices[lo:hi]
        starts, ends = indptr[terms], indptr[terms + 1]
        names = np.concatenate([indices[a:b] for a, b in zip(starts, ends)])
        if not len(names):
            continue
        values = np.concatenate([data[a:b] * w for a, b, w in zip(starts, ends, weights.data[lo:hi])])
        if len(terms) > 1:  # one list (half the queries at 6M names) is already sorted and has no repeats
            order = np.argsort(names, kind="stable")
            names, values = names[order], values[order]
            first = _first_of_runs(names)
            if not first.all():
                first = np.flatnonzero(first)
                names, values = names[first], np.add.reduceat(values, first)
        names = _best(names, values, depth)
        rows.append(np.full(len(names), row, dtype=np.int64))
        cols.append(names)
    return np.concatenate(rows), np.concatenate(cols)


def _best(names: np.ndarray, scores: np.ndarray, depth: int) -> np.ndarray:
    """The ``depth`` names of best score (all when fewer), as int64."""
    if len(names) > depth:
        names = names[np.argpartition(-scores, depth - 1)[:depth]]
    return names.astype(np.int64)


def _first_of_runs(ascending: np.ndarray) -> np.ndarray:
    """Mask of the entries of a sorted array that differ from the one before (the first of each run)."""
    return np.concatenate(([True], ascending[1:] != ascending[:-1])) if len(ascending) else np.zeros(0, dtype=bool)


def _distinct(names: np.ndarray) -> np.ndarray:
    """The distinct names, ascending. Why not ``np.unique``: NumPy 2.4 dedupes integers through a hash table,
    145 vs ~25 us for a query's ~2,300 candidates at 6M names (0.11 of 1.0 s for 787 queries, cProfile)."""
    names = np.sort(names)
    return names[_first_of_runs(names)]


def rescore_pairs(queries: "sp.csr_matrix", matrix: "sp.csr_matrix", row_of: np.ndarray, name_of: np.ndarray,
                  k: int) -> List[List[Tuple[int, float]]]:
    """Exact cosines of the (query row, name index) pairs (a pair may be listed more than once), each
    query's top ``k`` of them, best first (ties on the smaller name index), cosine > 0.

    Per query, its candidates' rows times the query as a dense vector: each cosine is the sum over the
    name's row in the row's order, in float32, as exact search's sparse product sums it (a term the query
    lacks adds 0), so both searches give bit-equal scores and break ties alike. One product per chunk of
    queries (every candidate times every query, then masked to the own pairs) did 64x the work: at 6M
    names 0.58 -> 0.37 ms per query, the same top-20 (NCBI-disease dev, the KB-scale bench's names)."""
    m = queries.shape[0]
    out: List[List[Tuple[int, float]]] = [[] for _ in range(m)]
    if not len(row_of):
        return out
    order = np.argsort(row_of, kind="stable")
    row_of, name_of = row_of[order], name_of[order]
    bounds = np.searchsorted(row_of, np.arange(m + 1))
    dense = np.zeros(queries.shape[1], dtype=np.float32)
    kept_rows, kept_names, kept_scores = [], [], []
    for row in range(m):
        lo, hi = bounds[row], bounds[row + 1]
        if lo == hi:
            continue
        names = _distinct(name_of[lo:hi])
        terms = queries.indices[queries.indptr[row] : queries.indptr[row + 1]]
        dense[terms] = queries.data[queries.indptr[row] : queries.indptr[row + 1]]
        scores = np.asarray(matrix[names] @ dense, dtype=np.float32)
        dense[terms] = 0.0
        keep = best_with_ties(scores, k)  # the k best and any tied with the k-th: keep_top_k orders them
        kept_names.append(names[keep])
        kept_scores.append(scores[keep])
        kept_rows.append(np.full(len(kept_names[-1]), row, dtype=np.int64))
    if not kept_rows:
        return out
    rows, names, scores = keep_top_k(np.concatenate(kept_rows), np.concatenate(kept_names),
                                     np.concatenate(kept_scores), k)
    for r, n, v in zip(rows.tolist(), names.tolist(), scores.tolist()):
        if v > 0:
            out[r].append((n, v))
    return out
