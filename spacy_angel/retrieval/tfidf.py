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

Persistence: ``tfidf.safetensors`` (idf, the CSR name matrix and its term-major postings, memory-mapped
on load so worker processes share them) and ``tfidf.json`` (settings, vocabulary, KB fingerprint) beside
the KB; no pickle. Search: exact (:mod:`.exact_search`), pruned (:mod:`.pruned_search`) or approximate
through a graph (:mod:`.ann_search`, ``tfidf-ann.*`` beside the KB, written by ``kb build --ann``).
scikit-learn and SciPy are imported only when an index is fitted or used, so plain beam linking never
pays for them.
"""
from __future__ import annotations

import json
import logging
import secrets
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from spacy_angel.errors import Errors, NameIndexError, Warnings
from spacy_angel.fileio import atomic_write_text
from spacy_angel.kb.normalize import normalize_name
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.mapped_arrays import index_dtype, write_arrays
from spacy_angel.retrieval.ann_search import AnnGraph, AnnSearchSettings, GraphSettings, ann_in_chunks, fit_digest
from spacy_angel.retrieval.candidates import concepts_from_hits
from spacy_angel.retrieval.exact_search import exact_top_k
from spacy_angel.retrieval.index_files import (
    INDEX_ARRAYS,
    consistent_csr,
    csr_over,
    read_index_arrays,
)
from spacy_angel.retrieval.pruned_search import pruned_nearest, streamed_postings, term_postings
from spacy_angel.retrieval.tfidf_fit import default_processes, fit_tfidf
from spacy_angel.types import Candidate

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer


logger = logging.getLogger(__name__)


INDEX_CONFIG = "tfidf.json"


_FORMAT = "spacy_angel.tfidf"


_FORMAT_VERSION = 2


SEARCHES = ("exact", "pruned", "ann")


class NameIndex:
    """TF-IDF (character 3-gram) index over the unique normalised names of a KB.

    Row ``i`` of the name matrix is ``kb.names[i]``, so name indices are the KB's own.
    ``search``: ``"exact"`` (every name scored; the reference, and what training uses) or ``"pruned"``
    (posting lists of each query's heaviest 3-grams, ``query_mass`` / ``rescore_depth``: see
    :mod:`spacy_angel.retrieval.pruned_search`) or ``"ann"`` (a graph plus the rarest 3-grams, ``ann``
    settings: see :mod:`spacy_angel.retrieval.ann_search`; the graph comes from :meth:`build_ann` or
    :meth:`from_disk`). Queries with exclusions are always exact.
    """

    def __init__(self, kb: KnowledgeBase, *, analyzer: str = "char_wb", ngram_range: Tuple[int, int] = (3, 3),
                 query_chunk_size: int = 256, name_chunk_size: int = 65536, search: str = "exact",
                 query_mass: float = 0.8, rescore_depth: int = 400,
                 ann: AnnSearchSettings = AnnSearchSettings()) -> None:
        if search not in SEARCHES or not 0.0 < query_mass <= 1.0 or rescore_depth < 1:
            raise ValueError(Errors.E223.format(search=search, searches=SEARCHES, query_mass=query_mass,
                                                rescore_depth=rescore_depth))
        self.kb = kb
        self.analyzer = analyzer
        self.ngram_range = tuple(ngram_range)
        self.query_chunk_size = int(query_chunk_size)
        self.name_chunk_size = int(name_chunk_size)
        self.search = search
        self.query_mass = float(query_mass)
        self.rescore_depth = int(rescore_depth)
        self.ann = ann
        self.graph: Optional[AnnGraph] = None
        self.fit_id: Optional[str] = None  # names the fitted matrix: a graph belongs to one (ann_search.fit_digest)
        self.vectorizer: Optional["TfidfVectorizer"] = None
        self.matrix: Optional["sp.csr_matrix"] = None
        self._postings: Optional["sp.csr_matrix"] = None

    # ------------------------------------------------------------------ fitting / io
    def _new_vectorizer(self, vocabulary: Optional[Dict[str, int]] = None) -> "TfidfVectorizer":
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(analyzer=self.analyzer, ngram_range=self.ngram_range, lowercase=True,
                               dtype=np.float32, norm="l2", vocabulary=vocabulary)

    def fit(self, cores: Optional[int] = None) -> "NameIndex":
        """Fit idf on the KB names and vectorise them (rows are L2-normalised: dot = cosine), chunk by
        chunk in bounded memory, from 200,000 names on in a forked process per core (of ``cores``; the same
        matrix either way; :mod:`.tfidf_fit`)."""
        if not self.kb.num_names:
            raise ValueError(Errors.E210)
        self.vectorizer, self.matrix = fit_tfidf(self.kb.names, self._new_vectorizer,
                                                 processes=default_processes(self.kb.num_names, cores))
        self._postings, self.graph, self.fit_id = None, None, self._fit_id()
        if self.search == "ann":
            self.build_ann()
        return self

    def _terms(self) -> List[str]:
        assert self.vectorizer is not None
        terms = [""] * len(self.vectorizer.vocabulary_)
        for term, col in self.vectorizer.vocabulary_.items():
            terms[int(col)] = str(term)
        return terms

    def _fit_id(self) -> str:
        assert self.vectorizer is not None
        return fit_digest(self.kb.fingerprint(), self._terms(), self.vectorizer.idf_)

    def build_ann(self, settings: GraphSettings = GraphSettings(), threads: int = 0,
                  progress: bool = False) -> "NameIndex":
        """Build the ANN graph of this fit (minutes at millions of names; ``progress``: a bar); :meth:`to_disk`
        or :meth:`save_ann` writes it."""
        self._require_fitted()
        assert self.matrix is not None and self.fit_id is not None
        self.graph = AnnGraph.build(self.matrix, self.fit_id, settings, threads=threads, progress=progress)
        return self

    def save_ann(self, directory: Union[str, Path]) -> None:
        """Write the graph beside the index arrays this fit was saved to (``kb build --ann``)."""
        if self.graph is None:
            raise RuntimeError(Errors.E211)
        self.graph.save(Path(directory))

    @property
    def postings(self) -> "sp.csr_matrix":
        """The term-major copy of the name matrix (pruned search), loaded or made on first use."""
        self._require_fitted()
        if self._postings is None:
            self._postings = term_postings(self.matrix)
        return self._postings

    @property
    def fitted(self) -> bool:
        return self.vectorizer is not None and self.matrix is not None

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(Errors.E211)

    def to_disk(self, directory: Union[str, Path]) -> None:
        """Write ``tfidf.safetensors`` (idf, the name matrix and its term-major postings, mappable) then
        ``tfidf.json`` (settings, vocabulary) into ``directory`` (e.g. the KB directory).

        Both carry the KB fingerprint and one build id, so a crash between the two writes reads as
        stale (and is refitted), never as an index of another build.
        """
        self._require_fitted()
        assert self.vectorizer is not None and self.matrix is not None
        d = Path(directory)
        terms = self._terms()
        m, fingerprint = self.matrix, self.kb.fingerprint()
        build_id = secrets.token_hex(8)
        positions = index_dtype(m.nnz, m.shape[1], m.shape[0])
        # np.asarray, not .astype: no copy of arrays that already have the dtype (at 1M names the copies
        # were the build's peak: 1,375 MB against 1,004 MB while fitting)
        arrays = {"idf": np.asarray(self.vectorizer.idf_, dtype=np.float64), "data": np.asarray(m.data, np.float32),
                  "indices": np.asarray(m.indices, positions), "indptr": np.asarray(m.indptr, positions)}
        # the term-major postings are made while they are written, never whole in memory (kb build's peak)
        post_indptr, post_data, post_indices = streamed_postings(m, positions)
        arrays.update(postings_indptr=post_indptr, postings_data=post_data, postings_indices=post_indices)
        write_arrays(d / INDEX_ARRAYS, arrays, {"format": _FORMAT, "kb_fingerprint": fingerprint, "build_id": build_id})
        config = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "analyzer": self.analyzer,
                  "ngram_range": list(self.ngram_range), "num_names": int(m.shape[0]), "kb_fingerprint": fingerprint,
                  "build_id": build_id, "fit_id": self.fit_id, "vocabulary": terms}
        atomic_write_text(d / INDEX_CONFIG, json.dumps(config, ensure_ascii=False))
        if self.graph is not None:
            self.graph.save(d)

    @classmethod
    def from_disk(cls, directory: Union[str, Path], kb: KnowledgeBase, *, mmap: bool = True,
                  **kwargs: Any) -> "NameIndex":
        """The index saved in ``directory`` for ``kb``, its arrays memory-mapped (``mmap``: shared between
        worker processes); :class:`NameIndexError` if it is unreadable, belongs to another KB or was built
        with other ``analyzer`` / ``ngram_range`` settings, or (``search="ann"``) its graph is missing or
        broken. Reads the v1 ``tfidf.npz`` too (into memory)."""

        d = Path(directory)
        try:
            config = json.loads((d / INDEX_CONFIG).read_text(encoding="utf-8"))
            version = config.get("format_version")
            if config.get("format") != _FORMAT or version not in (1, _FORMAT_VERSION):
                raise ValueError(Errors.E212.format(format=_FORMAT, version=_FORMAT_VERSION))
            arrays, meta = read_index_arrays(d, version, mmap)
            terms = config["vocabulary"]
            settings = {"analyzer": config["analyzer"], "ngram_range": tuple(config["ngram_range"])}
        except (OSError, ValueError, KeyError, AttributeError, TypeError, zipfile.BadZipFile) as err:
            raise NameIndexError(Errors.E213.format(path=d, err=err)) from err
        fp = kb.fingerprint()
        if config.get("kb_fingerprint") != fp or meta.get("kb_fingerprint") != fp:
            raise NameIndexError(Errors.E214.format(path=d, num_names=config.get("num_names"), kb_names=kb.num_names))
        if version != 1 and meta.get("build_id") != config.get("build_id"):
            raise NameIndexError(Errors.E222.format(path=d))
        for key, value in settings.items():
            if key in kwargs and (tuple(kwargs[key]) if key == "ngram_range" else kwargs[key]) != value:
                raise NameIndexError(Errors.E215.format(path=d, key=key, value=value, wanted=kwargs[key]))
        n, v = kb.num_names, len(terms)
        idf, data, indices, indptr = (arrays[k] for k in ("idf", "data", "indices", "indptr"))
        if not consistent_csr(data, indices, indptr, n, v) or len(idf) != v or (
                "postings_data" in arrays and not consistent_csr(
                    arrays["postings_data"], arrays["postings_indices"], arrays["postings_indptr"], v, n)):
            raise NameIndexError(Errors.E216.format(path=d))
        index = cls(kb, **{**kwargs, **settings})
        index.vectorizer = index._new_vectorizer({t: i for i, t in enumerate(terms)})
        index.vectorizer.idf_ = np.asarray(idf)
        index.matrix = csr_over(data, indices, indptr, (n, v))
        if "postings_data" in arrays:
            index._postings = csr_over(arrays["postings_data"], arrays["postings_indices"], arrays["postings_indptr"], (v, n))
        index.fit_id = config.get("fit_id") or config.get("build_id")  # an index saved before fit ids: its save
        if index.search == "ann":
            index.graph = AnnGraph.load(d, str(index.fit_id), n, v)
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
        try:
            return [int(i) for i in self.kb.name_indices_for(kb_id)]
        except (KeyError, ValueError):
            return []

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
        results: List[List[Tuple[int, float]]] = []
        if k <= 0:
            return [[] for _ in queries]
        if self.search == "ann" and exclude_ids is None:
            if self.graph is None:
                self.build_ann()
            return ann_in_chunks(self.transform, queries, self.matrix, self.postings, self.graph, k, self.ann)
        if self.search == "pruned" and exclude_ids is None:
            for qs in range(0, len(queries), min(qcs, 64)):  # 64: bounds the partial-score block per chunk
                results.extend(pruned_nearest(self.transform(list(queries[qs : qs + 64])), self.matrix,
                                              self.postings, k, query_mass=self.query_mass,
                                              rescore_depth=self.rescore_depth))
            return results
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
            best_r, best_c, best_s = exact_top_k(self.matrix, qt, k, ex_rows, ex_cols, ncs)
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
        return [concepts_from_hits(self.kb, hits, k) for hits in self.nearest_names(mentions, fetch)]


def load_or_build_index(kb: KnowledgeBase, path: Optional[Union[str, Path]] = None, **kwargs: Any) -> NameIndex:
    """The index saved in ``path`` (usually the KB directory) if it belongs to this KB; otherwise
    fit one and save it there (as the trie is rebuilt when the KB or tokenizer changes)."""
    if path is not None and (Path(path) / INDEX_CONFIG).exists():
        try:
            return NameIndex.from_disk(path, kb, **kwargs)
        except NameIndexError as err:
            # an ANN graph takes minutes per million names to rebuild: say so where a user sees it
            (logger.warning if kwargs.get("search") == "ann" else logger.info)("%s: rebuilding", err)
        if kwargs.get("search") == "ann":  # only the graph may be broken: keep a sound index, rebuild the graph
            try:
                index = NameIndex.from_disk(path, kb, **{**kwargs, "search": "exact"})
            except NameIndexError:
                pass
            else:
                index.search = "ann"
                return _saved(index.build_ann(), path, NameIndex.save_ann)
    return _saved(NameIndex(kb, **kwargs).fit(), path, NameIndex.to_disk)


def _saved(index: NameIndex, path: Optional[Union[str, Path]],
           save: Callable[[NameIndex, Union[str, Path]], None]) -> NameIndex:
    """``index`` after ``save(index, path)``; a place that cannot be written only loses the file (W001)."""
    if path is not None:
        try:
            save(index, path)
        except OSError as err:
            logger.warning(Warnings.W001.format(path=path, err=err))
    return index
