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

Peak: the finished matrix plus one chunk. The result equals ``fit_transform``'s bit for bit (a test
compares them), so indexes and rankings do not change; the cost is a second pass of the analyzer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from spacy_angel.errors import Errors
from spacy_angel.mapped_arrays import index_dtype

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

#: names per chunk: ~1.6M non-zeros, ~100 MB of transient arrays per chunk
FIT_CHUNK = 50_000


def fit_tfidf(names: Sequence[str], new_vectorizer: Callable[..., "TfidfVectorizer"],
              chunk: int = FIT_CHUNK) -> Tuple["TfidfVectorizer", "sp.csr_matrix"]:
    """``(vectorizer, matrix)`` as ``new_vectorizer().fit_transform(names)`` gives them (float32 CSR),
    with ``new_vectorizer(vocabulary=None)`` making an unfitted ``TfidfVectorizer``."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    analyze = new_vectorizer().build_analyzer()
    # pass 1: document frequency and first appearance of every term. fit_transform keeps each row's
    # entries in first-appearance order of their terms (it counts with ids in that order, then renames
    # them alphabetically without re-sorting); the row norms are summed in that order, so we keep it
    first: Dict[str, int] = {}
    df: Dict[str, int] = {}
    rows = nnz = 0
    for name in names:
        features = analyze(name)
        seen = set(features)
        for term in features:
            if term not in first:
                first[term] = len(first)
        for term in seen:
            df[term] = df.get(term, 0) + 1
        rows, nnz = rows + 1, nnz + len(seen)
    if not rows:
        raise ValueError(Errors.E210)
    terms = sorted(df)  # CountVectorizer's own column order
    vocabulary = {t: i for i, t in enumerate(terms)}
    rank = np.array([first[t] for t in terms], dtype=np.int64)
    idf = _idf(np.array([df[t] for t in terms], dtype=np.int64), rows)
    counter = CountVectorizer(analyzer=analyze, vocabulary=vocabulary, dtype=np.float32)
    weigher = TfidfTransformer(norm="l2", use_idf=True, smooth_idf=True)
    weigher.idf_, weigher.n_features_in_ = idf, len(terms)
    # pass 2: each chunk's counts, reordered as fit_transform orders them, weighted into arrays
    # allocated once for the whole matrix
    positions = index_dtype(nnz, len(terms), rows)
    data, indices = np.empty(nnz, dtype=np.float32), np.empty(nnz, dtype=positions)
    indptr = np.zeros(rows + 1, dtype=positions)
    row = pos = 0
    for texts in _chunks(names, chunk):
        counts = sp.csr_matrix(counter.transform(texts), dtype=np.float32)
        row_of = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        order = np.lexsort((rank[counts.indices], row_of))
        counts.indices, counts.data = counts.indices[order], counts.data[order]
        counts.has_sorted_indices = False
        part = sp.csr_matrix(weigher.transform(counts, copy=False), dtype=np.float32)
        data[pos : pos + part.nnz] = part.data
        indices[pos : pos + part.nnz] = part.indices
        indptr[row + 1 : row + 1 + part.shape[0]] = part.indptr[1:] + pos
        row, pos = row + part.shape[0], pos + part.nnz
    vectorizer = new_vectorizer(vocabulary)
    vectorizer.idf_ = idf
    matrix = sp.csr_matrix((rows, len(terms)), dtype=np.float32)
    matrix.data, matrix.indices, matrix.indptr = data, indices, indptr
    return vectorizer, matrix


def _idf(df: np.ndarray, n_samples: int) -> np.ndarray:
    """``TfidfTransformer.fit``'s smoothed idf for float32 counts: ln((n + 1) / (df + 1)) + 1."""
    smoothed = df.astype(np.float32) + np.float32(1.0)
    idf = np.full_like(smoothed, fill_value=n_samples + 1, dtype=np.float32)
    idf /= smoothed
    np.log(idf, out=idf)
    idf += 1.0
    return idf


def _chunks(names: Sequence[str], size: int) -> Iterator[List[str]]:
    batch: List[str] = []
    for name in names:  # iteration, not slicing: a mapped KB decodes many names per call
        batch.append(name)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
