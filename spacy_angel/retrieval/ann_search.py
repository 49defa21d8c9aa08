"""Approximate top-k TF-IDF names for KBs of millions of names: a graph and the rarest 3-grams, then exact scores.

Why: exact search scores every name (11 queries/s at 6M names on 2 cores) and pruned search walks posting
lists that lengthen with the KB. Here a query's work hardly grows with the KB:

1. **graph**: every name row is projected to ``dim`` dimensions by a seeded Gaussian matrix (terms x dim,
   saved) and put in an HNSW graph (cosine, int8 vectors), written beside the KB by ``kb build --ann`` and
   memory-mapped on load, so ``n_process`` workers share its pages. Names with identical vectors (word-order
   variants) are one node, their twins listed beside it (:mod:`.twin_names`). The query's projection finds
   ``graph_depth`` vectors with ``expansion_search`` candidates in flight; each brings all its names.
2. **rare 3-grams**: the query's 3-grams with the shortest posting lists, as long as those lists hold at
   most ``rare_budget`` entries together, give partial scores; their ``rare_depth`` best names are added.
   A graph walk misses names that share only a short query ("dm") or one rare word with it: they are
   scattered over the graph, but they are exactly what the rare lists hold.
3. both sets get their exact cosine from the name matrix (as pruned search re-scores), top ``k``.

The union is what makes it usable: on the bench's 6M names (MEDIC + synthetic variants) the graph alone
finds 83.5% of the exact top-20, the union 97.4%; at 2M names 89.9% and 99.3% (:class:`AnnSearchSettings`).

No key lookups: usearch's key -> slot table serves ``get`` / ``remove`` by key, which search never uses (it
returns the keys stored in the nodes), and it was most of a view's private memory: at 6M names 383 -> 123 MB
per process and the view 0.69 -> 0.27 s (a probe; the same file is written and the same keys found).

Library: usearch (HNSW; Apache-2.0) because it ships wheels for Linux, macOS and Windows, maps a saved
graph without reading it (``view``) and stores int8 vectors; hnswlib builds from source on most
platforms and nmslib's install failures are scispacy's most reported problem. It is an optional
dependency (``pip install 'spacy-angel[ann]'``); exact and pruned search need none. A graph built with
several threads can differ between builds (insertion order), so its recall is measured, not assumed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Sequence, Tuple

import numpy as np

from spacy_angel.errors import Errors, NameIndexError
from spacy_angel.fileio import atomic_path
from spacy_angel.mapped_arrays import read_arrays, write_arrays
from spacy_angel.memory import release_free_heap, release_pages
from spacy_angel.retrieval.pruned_search import best_merged, keep_terms, rescore_pairs
from spacy_angel.retrieval.twin_names import TwinTable

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp


ANN_GRAPH = "tfidf-ann.usearch"


ANN_ARRAYS = "tfidf-ann.safetensors"


_FORMAT = "spacy_angel.tfidf_ann"


REBUILD_HINT = "rebuild it with `spacy-angel kb build --ann` (or use search='exact')"


@dataclass(frozen=True)
class GraphSettings:
    """How the graph is built (saved with it). ``connectivity`` is HNSW's M, ``expansion_add`` its
    efConstruction; 256 dimensions keep 99.5% of the exact top-20 by brute force on 1M names. At 6M names
    (docs/results/ann_graph_settings_6m*.json; one build each, and builds of one setting differ: the
    threads insert in varying order) 128 dimensions build 7% faster and find 1.3 points less of the exact
    top-20; ``expansion_add`` 32 / 40 / 48 build 38% / 26% / 15-18% faster and find 3.5 / 2.2 / 0.4-3.5
    points less; ``connectivity`` 12 builds no faster and finds 1.3 points less. The build is bound by
    memory latency (each insertion's walk reads vectors scattered over the whole graph), so fewer
    dimensions or links save little; only a shallower walk does, at a cost in recall."""

    dim: int = 256
    connectivity: int = 16
    expansion_add: int = 64
    seed: int = 0


@dataclass(frozen=True)
class AnnSearchSettings:
    """How a query searches, chosen on NCBI-disease dev mentions (787) against the KB-scale bench's names
    (MEDIC + synthetic variants): share of the exact top-20 found (``bench/ann_settings.py``,
    docs/results/ann_settings_{1m,2m,6m}.json, with the queries/s of each setting):

    ==================================  ========  ========  ========
    setting                             1M names  2M names  6M names
    ==================================  ========  ========  ========
    the graph alone (rare_budget 0)     91.4%     89.9%     83.5%
    rare_depth 200                      99.7%     98.6%     95.4%
    rare_depth 200, ef 512, depth 400   99.8%     99.0%     96.0%
    rare_depth 1,000                    99.9%     99.2%     96.7%
    **rare_depth 2,000 (default)**      99.9%     99.3%     97.4%
    rare_budget 150,000                 99.9%     99.7%     98.6%
    ==================================  ========  ========  ========

    Deeper rare lists buy recall where a deeper graph walk buys less; a larger rare budget buys the most
    but costs speed (1,413 -> 890 queries/s at 6M names, docs/results/ann_settings_6m_r17.json); 99% at 6M
    names takes a budget of 300,000: 396 queries/s (docs/results/ann_settings_6m_r18.json), and the other ways
    of reading the lists lie on the same curve (docs/results/candidate_curve_6m.json). At 6M
    names each base name of the bench has ~77 near-identical variants that tie on the rare 3-grams: that
    is where recall is lost. Recall moves by up to a point between builds of one graph (97.4% and 97.7%
    at 6M). ``threads``: query chunks searched at once (SciPy's sparse products and the graph walk release
    the GIL: 968 -> 1,413 queries/s from 1 to 2 threads at 6M names, docs/results/ann_settings_6m_r17.json);
    use 1 in each of many worker processes."""

    expansion_search: int = 256
    graph_depth: int = 200
    rare_budget: int = 50_000
    rare_depth: int = 2_000
    threads: int = 2

    def __post_init__(self) -> None:
        if min(self.expansion_search, self.graph_depth, self.rare_depth, self.threads) < 1 or self.rare_budget < 0:
            raise ValueError(Errors.E226.format(settings=asdict(self)))


def _usearch_index() -> Any:
    try:
        from usearch.index import Index
    except ImportError as err:
        raise ImportError(Errors.E225) from err
    return Index


class AnnGraph:
    """The projection and the HNSW graph of one fitted TF-IDF index (``fit_id``)."""

    def __init__(self, projection: np.ndarray, graph: Any, settings: GraphSettings, fit_id: str,
                 twins: TwinTable = TwinTable.empty()) -> None:
        self.projection = projection
        self.graph = graph
        self.settings = settings
        self.fit_id = fit_id
        self.twins = twins  # names whose vector another name holds in the graph (twin_names)

    @classmethod
    def build(cls, matrix: "sp.csr_matrix", fit_id: str, settings: GraphSettings = GraphSettings(),
              threads: int = 0, chunk: int = 65_536, progress: bool = False) -> "AnnGraph":
        """Project the name rows chunk by chunk (never all of them in float32: 6 GB at 6M names) into a new graph,
        one node per distinct vector (:mod:`.twin_names`); ``progress``: a bar over the names (minutes per million)."""
        from tqdm import tqdm

        release_free_heap()  # the graph is the build's largest allocation: start it from a trimmed heap
        rng = np.random.default_rng(settings.seed)
        projection = (rng.standard_normal((matrix.shape[1], settings.dim)) / np.sqrt(settings.dim)).astype(np.float32)
        graph = _usearch_index()(ndim=settings.dim, metric="cos", dtype="i8", connectivity=settings.connectivity,
                                 expansion_add=settings.expansion_add, enable_key_lookups=False)
        twins = TwinTable.of(matrix)
        in_graph = twins.is_rep_or_single(matrix.shape[0])
        bar = tqdm(total=matrix.shape[0], desc="ANN graph", unit="name", disable=not progress, dynamic_ncols=True)
        with bar:
            for lo in range(0, matrix.shape[0], chunk):
                hi = min(matrix.shape[0], lo + chunk)
                keep = np.flatnonzero(in_graph[lo:hi])
                rows = np.asarray(matrix[lo + keep] @ projection, dtype=np.float32)
                graph.add((lo + keep).astype(np.uint64), rows, threads=threads)
                release_pages(matrix.data, matrix.indices, matrix.indptr)  # read once: keep them out of RSS
                bar.update(hi - lo)
        return cls(projection, graph, settings, fit_id, twins)

    def save(self, directory: Path) -> None:
        """The graph (usearch's own file), then the projection and settings: each temp + rename. The second
        file carries the graph's size and the fit's id, so a crash between them reads as stale."""
        with atomic_path(directory / ANN_GRAPH) as tmp:
            self.graph.save(str(tmp))
        meta = {"format": _FORMAT, "fit_id": self.fit_id, "num_names": str(len(self.graph) + len(self.twins.names)),
                "settings": json.dumps(asdict(self.settings))}
        write_arrays(directory / ANN_ARRAYS, {"projection": self.projection, "twin_reps": self.twins.reps,
                                              "twin_ptr": self.twins.ptr, "twin_names": self.twins.names}, meta)

    @classmethod
    def load(cls, directory: Path, fit_id: str, num_names: int, num_terms: int) -> "AnnGraph":
        """The saved graph, memory-mapped; :class:`NameIndexError` (naming the file, with a rebuild hint)
        if it is missing, truncated, foreign or from another fit of the TF-IDF index."""
        Index = _usearch_index()
        failing = directory / ANN_ARRAYS  # the file the error names: the one being read or checked
        try:
            arrays, meta = read_arrays(failing)
            if meta.get("format") != _FORMAT:
                raise ValueError(f"not a spacy-angel ANN file (format {meta.get('format')!r})")
            settings = GraphSettings(**json.loads(meta["settings"]))
            if meta.get("fit_id") != fit_id:
                raise ValueError("it was built for another fit of the TF-IDF index")
            projection = arrays["projection"]
            twins = TwinTable.empty()  # a graph saved before twins were folded holds every name
            if "twin_names" in arrays:
                twins = TwinTable(np.asarray(arrays["twin_reps"]), np.asarray(arrays["twin_ptr"]),
                                  np.asarray(arrays["twin_names"]))
            twins.check(num_names)
            if str(num_names) != meta.get("num_names") or projection.shape != (num_terms, settings.dim):
                raise ValueError(f"it was written for {meta.get('num_names')} names, the KB has {num_names}")
            failing = directory / ANN_GRAPH
            graph = Index.restore(str(failing), view=True, enable_key_lookups=False)
            if graph is None:
                raise ValueError("not a usearch index")
            held = len(graph) + len(twins.names)
            if held != num_names or graph.ndim != settings.dim:
                raise ValueError(f"it holds {held} names of {graph.ndim} dimensions, the KB {num_names}")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise NameIndexError(Errors.E224.format(path=failing, err=err, hint=REBUILD_HINT)) from err
        return cls(projection, graph, settings, fit_id, twins)

    def candidates(self, queries: "sp.csr_matrix", depth: int, expansion: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(query row, name index)`` of each query's ``depth`` nearest vectors in the graph, with all their names."""
        self.graph.expansion_search = int(expansion)
        vectors = np.asarray(queries @ self.projection, dtype=np.float32)
        depth = min(int(depth), len(self.graph))
        keys = self.graph.search(vectors, depth, threads=1).keys.astype(np.int64).reshape(len(vectors), -1)
        rows = np.repeat(np.arange(len(vectors), dtype=np.int64), keys.shape[1])
        keys = keys.reshape(-1)
        found = (keys >= 0) & (keys < len(self.graph) + len(self.twins.names))  # unfilled slots hold a sentinel key
        return self.twins.expand(rows[found], keys[found])


def rare_terms(queries: "sp.csr_matrix", posting_lengths: np.ndarray, budget: int) -> "sp.csr_matrix":
    """``queries`` keeping, per row, its terms with the shortest posting lists while their lengths sum to at
    most ``budget`` (at least the rarest term)."""

    def rarest(_: np.ndarray, terms: np.ndarray) -> Tuple[np.ndarray, int]:
        lengths = posting_lengths[terms]
        order = np.argsort(lengths, kind="stable")
        return order, max(1, int(np.searchsorted(np.cumsum(lengths[order]), budget, side="right")))

    return keep_terms(queries, rarest)


def ann_nearest(queries: "sp.csr_matrix", matrix: "sp.csr_matrix", postings: "sp.csr_matrix", graph: AnnGraph,
                k: int, settings: AnnSearchSettings) -> List[List[Tuple[int, float]]]:
    """Top-``k`` ``(name index, cosine)`` per query row, best first, cosine > 0 (see the module doc)."""
    if k <= 0 or queries.shape[0] == 0:
        return [[] for _ in range(queries.shape[0])]
    rows, names = graph.candidates(queries, max(settings.graph_depth, k), settings.expansion_search)
    if settings.rare_budget:
        rare = rare_terms(queries, np.diff(postings.indptr), settings.rare_budget)
        rare_rows, rare_names = best_merged(rare, postings, max(settings.rare_depth, k))
        # pairs both sources found are listed twice: rescore_pairs counts each once (a np.unique over the
        # pairs here was 12% of the search time at 6M names)
        rows, names = np.concatenate([rows, rare_rows]), np.concatenate([names, rare_names])
    return rescore_pairs(queries, matrix, rows, names, k)


def ann_in_chunks(transform: Callable[[List[str]], "sp.csr_matrix"], queries: Sequence[str], matrix: "sp.csr_matrix",
                  postings: "sp.csr_matrix", graph: AnnGraph, k: int,
                  settings: AnnSearchSettings) -> List[List[Tuple[int, float]]]:
    """:func:`ann_nearest` for raw queries (``transform``: to TF-IDF rows), by chunks of 64 (bounds the rare
    3-grams' partial-score block), ``settings.threads`` chunks at a time."""

    def search(chunk: Sequence[str]) -> List[List[Tuple[int, float]]]:
        return ann_nearest(transform(list(chunk)), matrix, postings, graph, k, settings)

    chunks = [queries[lo : lo + 64] for lo in range(0, len(queries), 64)]
    if settings.threads == 1 or len(chunks) == 1:
        return [hits for chunk in chunks for hits in search(chunk)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(settings.threads, len(chunks))) as pool:
        return [hits for part in pool.map(search, chunks) for hits in part]


def fit_digest(kb_fingerprint: str, terms: List[str], idf: np.ndarray) -> str:
    """A digest of what fixes a TF-IDF name matrix (the KB's names, the vocabulary, the idf): the same for
    every fit of one KB, so refitting it keeps its graph valid and reruns write identical files; another
    KB's fit gets another, which marks its old graph stale."""
    import hashlib

    digest = hashlib.sha256(kb_fingerprint.encode())
    digest.update("\0".join(terms).encode("utf-8"))
    digest.update(np.ascontiguousarray(idf, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def recall_of_exact(exact: List[List[Tuple[int, float]]], found: List[List[Tuple[int, float]]]) -> float:
    """Share of the exact top-k (``nearest_names`` rows) that an approximate search found, names of equal
    cosine counting as interchangeable (a tie at the k-th place has no single right answer): per query, the
    multiset of exact cosines (5 decimals) met by the found ones. Benches and tests measure ANN search by it."""
    from collections import Counter

    hit = total = 0
    for want, got in zip(exact, found):
        have = Counter(round(s, 5) for _, s in got)
        hit += sum(min(n, have[v]) for v, n in Counter(round(s, 5) for _, s in want).items())
        total += len(want)
    return hit / max(total, 1)
