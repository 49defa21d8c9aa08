"""Character 3-gram TF-IDF index over KB names: the top-K names per mention, without a model.

It proposes candidates for re-ranking and hybrid linking, is the nearest-name baseline, and gives
ANGEL its TF-IDF positives and negatives (Kim et al. 2025) in ``training``.

Analyzer choice: ``char_wb`` (not ``char``). ``char_wb`` pads every word with spaces, so

* abbreviations of one or two letters ("ms", "t2") still get 3-grams (" ms", "ms ") instead
  of an all-zero vector, which would make them unlinkable and similarity-less;
* n-grams never straddle a word boundary, so word-order variants that are common among UMLS
  synonyms ("cancer of the breast" / "breast cancer") share almost all of their features.

Scaling: the name matrix is sparse (n_names x n_3grams); :meth:`NameIndex.nearest_names`
multiplies query chunks by name chunks, keeps each block sparse and a running top-k, so it
works for millions of names without an n x n matrix.

Persistence: ``tfidf.npz`` (idf and the CSR name matrix) and ``tfidf.json`` (settings, vocabulary,
KB fingerprint) beside the KB, loaded with ``allow_pickle=False``. scikit-learn and SciPy are
imported only when an index is fitted or used, so plain beam linking never pays for them.
"""
from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from spacy_angel.errors import Errors, NameIndexError, Warnings
from spacy_angel.fileio import atomic_write_bytes, atomic_write_text
from spacy_angel.kb.normalize import normalize_name
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.types import Candidate

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer


logger = logging.getLogger(__name__)


INDEX_CONFIG = "tfidf.json"


INDEX_ARRAYS = "tfidf.npz"


_FORMAT = "spacy_angel.tfidf"


_FORMAT_VERSION = 1


def _safe_canonical(kb: KnowledgeBase, kb_id: str) -> str:
    """Canonical id when the KB knows it, the id itself otherwise (gold ids may be retired)."""
    try:
        cid = kb.canonical_id(kb_id)
    except (KeyError, ValueError):
        return kb_id
    return cid if cid else kb_id


class NameIndex:
    """TF-IDF (character 3-gram) index over the unique normalised names of a KB.

    Row ``i`` of the name matrix is ``kb.names[i]``, so name indices are the KB's own.
    """

    def __init__(self, kb: KnowledgeBase, *, analyzer: str = "char_wb", ngram_range: Tuple[int, int] = (3, 3),
                 query_chunk_size: int = 256, name_chunk_size: int = 65536) -> None:
        self.kb = kb
        self.analyzer = analyzer
        self.ngram_range = tuple(ngram_range)
        self.query_chunk_size = int(query_chunk_size)
        self.name_chunk_size = int(name_chunk_size)
        self.vectorizer: Optional["TfidfVectorizer"] = None
        self.matrix: Optional["sp.csr_matrix"] = None

    # ------------------------------------------------------------------ fitting / io
    def _new_vectorizer(self, vocabulary: Optional[Dict[str, int]] = None) -> "TfidfVectorizer":
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(analyzer=self.analyzer, ngram_range=self.ngram_range, lowercase=True,
                               dtype=np.float32, norm="l2", vocabulary=vocabulary)

    def fit(self) -> "NameIndex":
        """Fit idf on the KB names and vectorise them (rows are L2-normalised: dot = cosine)."""
        import scipy.sparse as sp

        names = list(self.kb.names)
        if not names:
            raise ValueError(Errors.E210)
        self.vectorizer = self._new_vectorizer()
        self.matrix = sp.csr_matrix(self.vectorizer.fit_transform(names), dtype=np.float32)
        return self

    @property
    def fitted(self) -> bool:
        return self.vectorizer is not None and self.matrix is not None

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(Errors.E211)

    def to_disk(self, directory: Union[str, Path]) -> None:
        """Write ``tfidf.npz`` then ``tfidf.json`` into ``directory`` (e.g. the KB directory).

        Both carry the KB fingerprint, so a crash between the two writes reads as stale, not wrong.
        """
        self._require_fitted()
        assert self.vectorizer is not None and self.matrix is not None
        d = Path(directory)
        terms = [""] * len(self.vectorizer.vocabulary_)
        for term, col in self.vectorizer.vocabulary_.items():
            terms[int(col)] = str(term)
        m, fingerprint = self.matrix, self.kb.fingerprint()
        buf = io.BytesIO()
        np.savez(buf, idf=np.asarray(self.vectorizer.idf_, dtype=np.float64), data=m.data.astype(np.float32),
                 indices=m.indices.astype(np.int32), indptr=m.indptr.astype(np.int64),
                 kb_fingerprint=np.array(fingerprint))
        atomic_write_bytes(d / INDEX_ARRAYS, buf.getvalue())
        config = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "analyzer": self.analyzer,
                  "ngram_range": list(self.ngram_range), "num_names": int(m.shape[0]), "kb_fingerprint": fingerprint,
                  "vocabulary": terms}
        atomic_write_text(d / INDEX_CONFIG, json.dumps(config, ensure_ascii=False))

    @classmethod
    def from_disk(cls, directory: Union[str, Path], kb: KnowledgeBase, **kwargs: Any) -> "NameIndex":
        """The index saved in ``directory`` for ``kb``; :class:`NameIndexError` if it is unreadable,
        belongs to another KB or was built with other ``analyzer`` / ``ngram_range`` settings."""
        import scipy.sparse as sp

        d = Path(directory)
        try:
            config = json.loads((d / INDEX_CONFIG).read_text(encoding="utf-8"))
            with np.load(d / INDEX_ARRAYS, allow_pickle=False) as z:
                idf, data, indices, indptr = (z[k] for k in ("idf", "data", "indices", "indptr"))
                saved_fp = str(z["kb_fingerprint"])
            if config.get("format") != _FORMAT or config.get("format_version") != _FORMAT_VERSION:
                raise ValueError(Errors.E212.format(format=_FORMAT, version=_FORMAT_VERSION))
            terms = config["vocabulary"]
            settings = {"analyzer": config["analyzer"], "ngram_range": tuple(config["ngram_range"])}
        except (OSError, ValueError, KeyError, AttributeError, TypeError, zipfile.BadZipFile) as err:
            raise NameIndexError(Errors.E213.format(path=d, err=err)) from err
        if config.get("kb_fingerprint") != kb.fingerprint() or saved_fp != kb.fingerprint():
            raise NameIndexError(Errors.E214.format(path=d, num_names=config.get("num_names"), kb_names=kb.num_names))
        for key, value in settings.items():
            if key in kwargs and (tuple(kwargs[key]) if key == "ngram_range" else kwargs[key]) != value:
                raise NameIndexError(Errors.E215.format(path=d, key=key, value=value, wanted=kwargs[key]))
        n, v = kb.num_names, len(terms)
        if (len(idf) != v or len(indptr) != n + 1 or int(indptr[-1]) != len(data) or len(indices) != len(data)
                or (len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= v))):
            raise NameIndexError(Errors.E216.format(path=d))
        index = cls(kb, **{**kwargs, **settings})
        index.vectorizer = index._new_vectorizer({t: i for i, t in enumerate(terms)})
        index.vectorizer.idf_ = idf
        index.matrix = sp.csr_matrix((data, indices, indptr), shape=(n, v), dtype=np.float32)
        return index

    save = to_disk
    load = from_disk

    # ------------------------------------------------------------------ vectors
    def transform(self, texts: Sequence[str]) -> "sp.csr_matrix":
        """L2-normalised TF-IDF rows for raw strings (normalised like KB names first)."""
        self._require_fitted()
        assert self.vectorizer is not None
        import scipy.sparse as sp

        return sp.csr_matrix(self.vectorizer.transform([normalize_name(t) for t in texts]), dtype=np.float32)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Row-wise cosine ``cos(a[i], b[i])`` (not a full matrix), shape ``(len(a),)``."""
        if len(a) != len(b):
            raise ValueError(Errors.E217.format(a=len(a), b=len(b)))
        if not len(a):
            return np.zeros(0, dtype=np.float64)
        va, vb = self.transform(a), self.transform(b)
        return np.asarray(va.multiply(vb).sum(axis=1), dtype=np.float64).ravel()

    def max_similarity(self, mention: str, gold_names: Sequence[str]) -> Optional[float]:
        """Max cosine of ``mention`` to any of ``gold_names`` (``None`` if there are none)."""
        gold_names = list(gold_names)
        if not gold_names:
            return None
        sims = self.similarity([mention] * len(gold_names), gold_names)
        return float(np.clip(sims.max(), 0.0, 1.0))

    def cosine(self, query_texts: Sequence[str], name_indices_per_query: Sequence[Sequence[int]]) -> List[np.ndarray]:
        """Cosine of each query to the KB names whose indices are given for it, in that order.

        For scoring names that :meth:`nearest_names` did not retrieve (e.g. beam candidates in
        hybrid linking): one float32 array per query, all pairs in one sparse row-wise product.
        """
        self._require_fitted()
        assert self.matrix is not None
        if len(name_indices_per_query) != len(query_texts):
            raise ValueError(Errors.E218.format(lists=len(name_indices_per_query), queries=len(query_texts)))
        lists = [np.asarray(x, dtype=np.int64).reshape(-1) for x in name_indices_per_query]
        lens = np.array([len(x) for x in lists], dtype=np.int64)
        if not lens.sum():
            return [np.zeros(0, dtype=np.float32) for _ in lists]
        cols = np.concatenate(lists)
        n = self.matrix.shape[0]
        if cols.min() < 0 or cols.max() >= n:
            raise IndexError(Errors.E219.format(n=n))
        rows = np.repeat(np.arange(len(lists)), lens)
        queries = self.transform(query_texts)
        sims = np.asarray(queries[rows].multiply(self.matrix[cols]).sum(axis=1), dtype=np.float32).ravel()
        return np.split(sims, np.cumsum(lens)[:-1])

    # ------------------------------------------------------------------ concept helpers
    def _name_indices_for(self, kb_id: str) -> List[int]:
        out: List[int] = []
        seen: Set[int] = set()
        for key in (kb_id, _safe_canonical(self.kb, kb_id)):
            try:
                names = self.kb.names_for(key)
            except (KeyError, ValueError):
                names = ()
            for name in names:
                idx = self.kb.name_index(name)
                if idx is None:
                    idx = self.kb.name_index(normalize_name(name))
                if idx is not None and idx not in seen:
                    seen.add(idx)
                    out.append(int(idx))
        return out

    def _excluded_indices(self, ids: Iterable[str]) -> np.ndarray:
        idx: Set[int] = set()
        for kb_id in ids:
            idx.update(self._name_indices_for(kb_id))
        return np.fromiter(sorted(idx), dtype=np.int64, count=len(idx))

    def top_names_for_concept(self, mention: str, kb_id: str, k: int = 3) -> List[str]:
        """The ``k`` names of concept ``kb_id`` most similar to ``mention`` (ANGEL positives).

        Ties keep the KB's name order (so the preferred name wins among equals).
        """
        self._require_fitted()
        assert self.matrix is not None
        idxs = self._name_indices_for(kb_id)
        if not idxs or k <= 0:
            return []
        q = self.transform([mention])
        sims = np.asarray((self.matrix[idxs] @ q.T).toarray(), dtype=np.float64).ravel()
        order = sorted(range(len(idxs)), key=lambda j: (-sims[j], j))
        return [self.kb.names[idxs[j]] for j in order[:k]]

    def top_names_for_concepts(self, mention: str, kb_ids: Sequence[str], k: int = 3) -> List[Tuple[str, str]]:
        """``(id, name)``: the ``k`` closest names of each id in the KB, in id order, each name once (two
        ids of one concept share its names). ANGEL's positive targets and mining's gold names."""
        out: List[Tuple[str, str]] = []
        seen: Set[str] = set()
        for kb_id in kb_ids:
            if kb_id not in self.kb:
                continue
            for name in self.top_names_for_concept(mention, kb_id, k=k):
                if name not in seen:
                    seen.add(name)
                    out.append((kb_id, name))
        return out

    # ------------------------------------------------------------------ nearest names
    def nearest_names(
        self,
        queries: Sequence[str],
        k: int,
        exclude_ids: Optional[Sequence[Optional[Set[str]]]] = None,
        *,
        query_chunk_size: Optional[int] = None,
        name_chunk_size: Optional[int] = None,
    ) -> List[List[Tuple[int, float]]]:
        """Top-``k`` ``(name_index, cosine)`` per query, best first, cosine > 0 only.

        Names of the concepts in ``exclude_ids[j]`` are never returned for query ``j`` (that is
        how negatives avoid the gold concept). Ties break on the smaller name index, so the
        result does not depend on the chunk sizes. Memory: one sparse
        ``query_chunk_size x name_chunk_size`` cosine block at a time.
        """
        self._require_fitted()
        assert self.matrix is not None
        if exclude_ids is not None and len(exclude_ids) != len(queries):
            raise ValueError(Errors.E220.format(n=len(exclude_ids), queries=len(queries)))
        qcs = int(query_chunk_size or self.query_chunk_size)
        ncs = int(name_chunk_size or self.name_chunk_size)
        if qcs <= 0 or ncs <= 0:
            raise ValueError(Errors.E221)
        n = self.matrix.shape[0]
        results: List[List[Tuple[int, float]]] = []
        if k <= 0:
            return [[] for _ in queries]
        for qs in range(0, len(queries), qcs):
            chunk = list(queries[qs : qs + qcs])
            m = len(chunk)
            qt = self.transform(chunk).T.tocsr()  # V x m, small
            ex_rows: np.ndarray = np.zeros(0, dtype=np.int64)
            ex_cols: np.ndarray = np.zeros(0, dtype=np.int64)
            if exclude_ids is not None:
                rows, cols = [], []
                for r, ids in enumerate(exclude_ids[qs : qs + m]):
                    if ids:
                        e = self._excluded_indices(ids)
                        rows.append(np.full(len(e), r, dtype=np.int64))
                        cols.append(e)
                if rows:
                    ex_rows, ex_cols = np.concatenate(rows), np.concatenate(cols)
            best_r = np.zeros(0, dtype=np.int64)
            best_c = np.zeros(0, dtype=np.int64)
            best_s = np.zeros(0, dtype=np.float32)
            for ns in range(0, n, ncs):
                ne = min(n, ns + ncs)
                r, c, s = _block_top_k(self.matrix[ns:ne] @ qt, ex_rows, ex_cols, ns, k)
                best_r = np.concatenate([best_r, r])
                best_c = np.concatenate([best_c, c + ns])
                best_s = np.concatenate([best_s, s])
                best_r, best_c, best_s = _keep_top_k(best_r, best_c, best_s, k)
            per_row: List[List[Tuple[int, float]]] = [[] for _ in range(m)]
            for r, c, s in zip(best_r.tolist(), best_c.tolist(), best_s.tolist()):
                per_row[r].append((int(c), float(s)))
            results.extend(per_row)
        return results

    def negatives_for(self, name: str, kb_id: str, k: int) -> List[str]:
        """TF-IDF negatives: the ``k`` names most similar to ``name`` that are NOT names of ``kb_id``."""
        hits = self.nearest_names([name], k, exclude_ids=[{kb_id}])[0]
        return [self.kb.names[i] for i, _ in hits]

    def link(self, mentions: Sequence[str], k: int = 5) -> List[List[Candidate]]:
        """Nearest-name baseline: up to ``k`` candidates per mention, distinct concepts, score = cosine.

        A name's ids already produced by a better-ranked name are dropped; a name whose ids are
        all taken is skipped. More names than ``k`` are fetched so that ``k`` concepts survive.
        """
        if k <= 0:
            return [[] for _ in mentions]
        fetch = max(4 * k, k + 16)
        out: List[List[Candidate]] = []
        for hits in self.nearest_names(mentions, fetch):
            seen: Set[str] = set()
            cands: List[Candidate] = []
            for idx, score in hits:
                ids = tuple(i for i in self.kb.ids_for_index(idx) if i not in seen)
                if not ids:
                    continue
                seen.update(ids)
                cands.append(Candidate(kb_ids=ids, name=self.kb.names[idx], score=float(score)))
                if len(cands) >= k:
                    break
            out.append(cands)
        return out


def _block_top_k(
    product: "sp.spmatrix", ex_rows: np.ndarray, ex_cols: np.ndarray, offset: int, k: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query row, name column, cosine) of each query's top ``k`` (ties included) in one name block.

    ``product`` is the sparse (names x queries) cosine block. It stays sparse: a mention shares
    3-grams with about a fifth of MEDIC's names, so a dense block plus ``np.partition`` over every
    column cost 13x more (measured: 147 vs 1,958 queries/s for the 960 NCBI-disease test mentions
    x MEDIC's 77k names, identical top-20 with and without exclusions). Cosines are float32, as
    the dense block ranked them, so ties break the same way.
    """
    import scipy.sparse as sp

    block = product.T.tocsr()  # queries x names in this block
    block.data = block.data.astype(np.float32)
    sel = (ex_cols >= offset) & (ex_cols < offset + block.shape[1])
    if sel.any():
        excluded = sp.csr_matrix(
            (np.ones(int(sel.sum()), dtype=np.float32), (ex_rows[sel], ex_cols[sel] - offset)), shape=block.shape
        )
        block = block - block.multiply(excluded)
    block.data[block.data <= 0] = 0
    block.eliminate_zeros()
    rows, cols, scores = [], [], []
    indptr, indices, data = block.indptr, block.indices, block.data
    for row in range(block.shape[0]):
        lo, hi = indptr[row], indptr[row + 1]
        d = data[lo:hi]
        keep = slice(None) if len(d) <= k else d >= np.partition(d, len(d) - k)[len(d) - k]
        kept = indices[lo:hi][keep]
        rows.append(np.full(len(kept), row, dtype=np.int64))
        cols.append(kept.astype(np.int64))
        scores.append(d[keep])
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(scores).astype(np.float32)


def _keep_top_k(
    rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, k: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, keep the ``k`` best by (score desc, col asc); output sorted the same way."""
    if not len(rows):
        return rows, cols, scores
    order = np.lexsort((cols, -scores.astype(np.float64), rows))
    rows, cols, scores = rows[order], cols[order], scores[order]
    starts = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - starts
    keep = rank < k
    return rows[keep], cols[keep], scores[keep]


def load_or_build_index(kb: KnowledgeBase, path: Optional[Union[str, Path]] = None, **kwargs: Any) -> NameIndex:
    """The index saved in ``path`` (usually the KB directory) if it belongs to this KB; otherwise
    fit one and save it there (as the trie is rebuilt when the KB or tokenizer changes)."""
    if path is not None and (Path(path) / INDEX_CONFIG).exists():
        try:
            return NameIndex.from_disk(path, kb, **kwargs)
        except NameIndexError as err:
            logger.info("%s: rebuilding", err)
    index = NameIndex(kb, **kwargs).fit()
    if path is not None:
        try:
            index.to_disk(path)
        except OSError as err:
            logger.warning(Warnings.W001.format(path=path, err=err))
    return index
