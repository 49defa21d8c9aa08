"""Recall of the exact top-20 against the postings a query reads, per way of reading the posting lists.

Why: issue 27 asks for 2,000 queries/s at 99% of the exact top-20 at 6M names on 2 cores, i.e. about 1 ms
per query per core. ANN search (``spacy_angel.retrieval.ann_search``) joins the graph's candidates and the
best names of the rarest 3-grams' posting lists, then re-scores the union exactly. The graph's share is
fixed here (the defaults, computed once); what varies is how much of the posting lists a query reads:

* ``rare``: the rarest 3-grams while their lists hold at most ``budget`` entries (the default: 50,000);
* ``adaptive``: at least ``min_budget``, then more of the rarest 3-grams until they hold ``share`` of the
  query's squared weight, up to ``max_budget`` (more effort only for queries whose rare 3-grams say little);
* ``impact``: every 3-gram's list ordered by weight (its ``prefix`` heaviest names, built here), read down to
  one threshold on weight x query weight, chosen per query so that it reads ``budget`` entries
  (score-at-a-time over impact-ordered lists); the ``depth`` best partial sums are kept;
* ``prefix``: exact completion by prefix filtering (AllPairs / L2AP, Anastasiu & Karypis, ICDE 2014): each
  name is listed under its rarest 3-grams only, until its remaining 3-grams' norm is below ``t_min`` (built
  here); a query reads the lists of its own rarest 3-grams until its remaining norm is below a threshold t.
  Any name of cosine >= t shares a listed 3-gram with the query (the rest is bounded by Cauchy-Schwarz), so
  re-scoring those lists' names finds every such name. t is the 20th cosine the default ANN search found
  (``"threshold": "found"``, a lower bound of the exact one) or the exact 20th cosine (``"exact"``, an
  oracle: the highest t that still finds the exact top-20, so the fewest reads of this method); queries whose
  t is below ``t_min`` keep the defaults' result.

Per row: the share of the exact top-20 found (``ann_search.recall_of_exact``) with the graph's candidates
and without, the mean postings read per query, and for ``rare`` and ``adaptive`` the ms per query of the
merge (``pruned_search.best_merged``) and of the re-scoring, on 1 thread, medians of 3. ``impact``'s
threshold search is a Python loop here (a probe of the idea, not a kernel), so its rows carry no time.

    python bench/candidate_curve.py --kb .cache/bench/kb_scale/kb-6000000 --json docs/results/candidate_curve_6m.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, median, write_json_atomic  # noqa: E402
from kb_scale import read_queries  # noqa: E402

from spacy_angel.retrieval.ann_search import AnnSearchSettings, rare_terms, recall_of_exact  # noqa: E402
from spacy_angel.retrieval.pruned_search import best_merged, keep_terms, rescore_pairs  # noqa: E402

GRID = ('{"source": "rare", "budget": 50000}', '{"source": "rare", "budget": 100000}',
        '{"source": "rare", "budget": 150000}', '{"source": "rare", "budget": 300000}',
        '{"source": "adaptive", "min_budget": 50000, "max_budget": 150000, "share": 0.4}',
        '{"source": "adaptive", "min_budget": 50000, "max_budget": 300000, "share": 0.5}',
        '{"source": "impact", "budget": 50000, "depth": 2000, "prefix": 4096}',
        '{"source": "impact", "budget": 100000, "depth": 2000, "prefix": 4096}',
        '{"source": "prefix", "t_min": 0.5, "threshold": "found"}',
        '{"source": "prefix", "t_min": 0.5, "threshold": "exact"}')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kb", type=Path, required=True, help="a KB folder written with kb build --ann")
    p.add_argument("--queries", type=int, default=960, help="NCBI-disease dev mentions used as queries")
    p.add_argument("--rare-depth", type=int, default=2000, help="best names kept from the rare/adaptive lists")
    p.add_argument("--grid", nargs="+", default=list(GRID), help="JSON objects, one row each (see the module doc)")
    p.add_argument("--json", type=Path, required=True)
    return p.parse_args(argv)


def rarest_within(lengths: np.ndarray, min_budget: int, max_budget: int, share: float):
    """A ``keep_terms`` chooser: the rarest 3-grams within ``min_budget`` postings, then more while they hold
    less than ``share`` of the query's squared weight and stay within ``max_budget``."""

    def choose(weights: np.ndarray, terms: np.ndarray) -> Tuple[np.ndarray, int]:
        order = np.argsort(lengths[terms], kind="stable")
        read = np.cumsum(lengths[terms][order])
        mass = np.cumsum(weights[order].astype(np.float64) ** 2)
        least = max(1, int(np.searchsorted(read, min_budget, side="right")))
        most = max(1, int(np.searchsorted(read, max_budget, side="right")))
        wanted = int(np.searchsorted(mass, share * mass[-1] - 1e-12)) + 1
        return order, max(least, min(wanted, most))

    return choose


class ImpactLists:
    """Each 3-gram's ``prefix`` heaviest names, heaviest first (a term-major CSR of its own)."""

    def __init__(self, postings: Any, prefix: int) -> None:
        ptr, names, weights = (np.asarray(a) for a in (postings.indptr, postings.indices, postings.data))
        lengths = np.diff(ptr)
        self.ptr = np.concatenate([[0], np.cumsum(np.minimum(lengths, prefix))])
        self.names = np.empty(int(self.ptr[-1]), dtype=np.int64)
        self.weights = np.empty(int(self.ptr[-1]), dtype=np.float32)
        for term in np.flatnonzero(lengths).tolist():
            w = weights[ptr[term] : ptr[term + 1]]
            top = np.argpartition(-w, prefix - 1)[:prefix] if len(w) > prefix else np.arange(len(w))
            top = top[np.argsort(-w[top], kind="stable")]
            self.names[self.ptr[term] : self.ptr[term + 1]] = names[ptr[term] : ptr[term + 1]][top]
            self.weights[self.ptr[term] : self.ptr[term + 1]] = w[top]

    def candidates(self, queries: Any, budget: int, depth: int) -> Tuple[np.ndarray, np.ndarray, int]:
        """``(query row, name)`` of each query's ``depth`` best partial sums, and the entries read in all."""
        rows, out, read = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], 0
        for row in range(queries.shape[0]):
            lo, hi = queries.indptr[row], queries.indptr[row + 1]
            lists = [(self.ptr[t], -self.weights[self.ptr[t] : self.ptr[t + 1]], q)
                     for t, q in zip(queries.indices[lo:hi].tolist(), queries.data[lo:hi].tolist())]

            def taken(threshold: float) -> List[int]:  # entries of each list with weight x q >= threshold
                return [int(np.searchsorted(neg, -threshold / q, side="right")) for _, neg, q in lists]

            low, high = 0.0, 1.0
            for _ in range(25):  # bisection on the threshold: the smallest one reading at most `budget`
                mid = (low + high) / 2
                low, high = (mid, high) if sum(taken(mid)) > budget else (low, mid)
            counts = taken(high)
            read += sum(counts)
            if not sum(counts):
                continue
            names = np.concatenate([self.names[a : a + n] for (a, _, _), n in zip(lists, counts)])
            sums = np.concatenate([-neg[:n] * q for (_, neg, q), n in zip(lists, counts)])
            names, first = np.unique(names, return_inverse=True)
            sums = np.bincount(first, weights=sums)
            if len(names) > depth:
                names = names[np.argpartition(-sums, depth - 1)[:depth]]
            rows.append(np.full(len(names), row, np.int64))
            out.append(names)
        return np.concatenate(rows), np.concatenate(out), read


class PrefixLists:
    """Each 3-gram's list of the names in whose prefix it is (see the module doc), and the 3-grams' global order."""

    def __init__(self, matrix: Any, lengths: np.ndarray, t_min: float, chunk: int = 1 << 19) -> None:
        self.rank = np.empty(len(lengths), np.int64)
        self.rank[np.argsort(lengths, kind="stable")] = np.arange(len(lengths))  # rarest first
        ptr, cols, values = (np.asarray(a) for a in (matrix.indptr, matrix.indices, matrix.data))
        terms, names = [], []
        for lo in range(0, matrix.shape[0], chunk):
            hi = min(matrix.shape[0], lo + chunk)
            a, b = int(ptr[lo]), int(ptr[hi])
            sizes = np.diff(ptr[lo : hi + 1])
            rows = np.repeat(np.arange(lo, hi, dtype=np.int32), sizes)
            order = np.lexsort((-self.rank[cols[a:b]], rows))  # within a name: the commonest 3-gram first
            held = np.cumsum(values[a:b][order].astype(np.float64) ** 2)
            before = np.concatenate([[0.0], held])[ptr[lo:hi] - a]
            rest = held - np.repeat(before, sizes)  # the squared norm of this 3-gram and all commoner ones
            keep = order[rest >= t_min * t_min - 1e-9]
            terms.append(cols[a:b][keep].astype(np.int32))
            names.append(rows[keep])
        term_of, name_of = np.concatenate(terms), np.concatenate(names)
        order = np.argsort(term_of, kind="stable")
        self.names = name_of[order]
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(term_of, minlength=len(lengths)))])
        self.t_min = t_min

    def candidates(self, queries: Any, thresholds: np.ndarray) -> Tuple[List[np.ndarray], int, int]:
        """Per query the names of the lists it reads (none when its threshold is below ``t_min``), the
        entries read in all, and the queries left out."""
        out: List[np.ndarray] = []
        read = left = 0
        for row, threshold in enumerate(thresholds.tolist()):
            if threshold < self.t_min:
                left += 1
                out.append(np.zeros(0, np.int64))
                continue
            lo, hi = queries.indptr[row], queries.indptr[row + 1]
            terms = queries.indices[lo:hi]
            order = np.argsort(-self.rank[terms], kind="stable")  # the commonest first
            rest = np.cumsum(queries.data[lo:hi][order].astype(np.float64) ** 2)
            names = np.concatenate([self.names[self.ptr[t] : self.ptr[t + 1]]
                                    for t in terms[order][rest >= threshold * threshold - 1e-9].tolist()] or [[]])
            read += len(names)
            out.append(names.astype(np.int64))
        return out, read, left


def per_query(rows: np.ndarray, names: np.ndarray, queries: int) -> List[np.ndarray]:
    """The names of ``(query row, name)`` pairs, one array per query."""
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(queries + 1))
    return [names[order][bounds[q] : bounds[q + 1]] for q in range(queries)]


def timed(call: Callable[[], Any], repeats: int = 3) -> Tuple[Any, float]:
    """The call's result and its median seconds over ``repeats`` runs."""
    seconds, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - t0)
    return result, median(seconds)


@dataclass
class Setup:
    """The queries, the index, the exact top-20 and the default search's candidates, computed once."""

    vectors: Any
    matrix: Any
    postings: Any
    lengths: np.ndarray
    want: List[list]
    graph: Tuple[np.ndarray, np.ndarray]  # (query row, name) of the default graph walk
    rare: Tuple[np.ndarray, np.ndarray]  # ... and of the default rare lists

    def recall(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> float:
        rows, names = (np.concatenate(part) for part in zip(*pairs))
        return recall_of_exact(self.want, rescore_pairs(self.vectors, self.matrix, rows, names, 20))


def list_row(setup: Setup, row: Dict[str, Any], depth: int) -> None:
    """A ``rare`` or ``adaptive`` row: reads, recall, and the merge and re-scoring times."""
    if row["source"] == "rare":  # what ANN search reads
        kept = rare_terms(setup.vectors, setup.lengths, row["budget"])
    else:
        choose = rarest_within(setup.lengths, row["min_budget"], row["max_budget"], row["share"])
        kept = keep_terms(setup.vectors, choose)
    pairs, merge_s = timed(lambda: best_merged(kept, setup.postings, depth))
    both = [np.concatenate(part) for part in zip(setup.graph, pairs)]
    hits, rescore_s = timed(lambda: rescore_pairs(setup.vectors, setup.matrix, *both, 20))
    queries = setup.vectors.shape[0]
    row.update(merge_ms=1000 * merge_s / queries, rescore_ms=1000 * rescore_s / queries,
               recall_with_graph=recall_of_exact(setup.want, hits), recall_alone=setup.recall([pairs]),
               postings_per_query=int(setup.lengths[kept.indices].sum()) / queries)


def impact_row(setup: Setup, row: Dict[str, Any], lists: ImpactLists) -> None:
    """An ``impact`` row: reads and recall."""
    rows, names, read = lists.candidates(setup.vectors, row["budget"], row["depth"])
    row.update(recall_with_graph=setup.recall([setup.graph, (rows, names)]), recall_alone=setup.recall([(rows, names)]),
               postings_per_query=read / setup.vectors.shape[0])


def prefix_row(setup: Setup, row: Dict[str, Any], lists: PrefixLists, twentieth: np.ndarray) -> None:
    """A ``prefix`` row: reads on top of the default search's, recall of all queries and of those covered."""
    queries = setup.vectors.shape[0]
    more, read, row["queries_left_to_defaults"] = lists.candidates(setup.vectors, twentieth)
    defaults = zip(per_query(*setup.graph, queries), per_query(*setup.rare, queries))
    # one query at a time: the lists hold ~10^5 names a query, too many pairs to re-score at once
    hits = [rescore_pairs(setup.vectors[q], setup.matrix, np.zeros(len(names), np.int64), names, 20)[0]
            for q, names in enumerate(np.concatenate([*parts, extra]) for parts, extra in zip(defaults, more))]
    covered = np.flatnonzero(twentieth >= row["t_min"]).tolist()
    row.update(recall_with_graph=recall_of_exact(setup.want, hits), postings_per_query=read / queries,
               recall_of_covered_queries=recall_of_exact([setup.want[q] for q in covered], [hits[q] for q in covered]),
               reads_on_top_of_the_defaults=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.retrieval.tfidf import NameIndex

    kb = KnowledgeBase.from_disk(args.kb)
    index = NameIndex.from_disk(args.kb, kb, search="ann")
    queries = read_queries(args.queries)
    vectors, postings, defaults = index.transform(queries), index.postings, AnnSearchSettings()
    lengths = np.diff(np.asarray(postings.indptr))
    default_rare = rare_terms(vectors, lengths, defaults.rare_budget)
    setup = Setup(vectors, index.matrix, postings, lengths, NameIndex.from_disk(args.kb, kb).nearest_names(queries, 20),
                  index.graph.candidates(vectors, defaults.graph_depth, defaults.expansion_search),
                  best_merged(default_rare, postings, defaults.rare_depth))
    found = rescore_pairs(vectors, index.matrix, *(np.concatenate(part) for part in zip(setup.graph, setup.rare)), 20)
    twentieth = {"found": np.array([hits[-1][1] if len(hits) == 20 else 0.0 for hits in found]),
                 "exact": np.array([hits[-1][1] if len(hits) == 20 else 0.0 for hits in setup.want])}
    graph_hits, rescore_s = timed(lambda: rescore_pairs(vectors, index.matrix, *setup.graph, 20))
    records: List[Dict[str, Any]] = [{"source": "graph alone", "postings_per_query": 0,
                                      "recall_with_graph": recall_of_exact(setup.want, graph_hits),
                                      "rescore_ms": 1000 * rescore_s / len(queries)}]
    print(json.dumps(records[-1]), flush=True)
    built: Dict[Tuple[str, float], Any] = {}  # impact / prefix lists, built once per setting
    for spec in args.grid:
        row: Dict[str, Any] = json.loads(spec)
        if row["source"] in ("rare", "adaptive"):
            list_row(setup, row, args.rare_depth)
        else:
            key = (row["source"], row["prefix"] if row["source"] == "impact" else row["t_min"])
            if key not in built:
                build = (lambda: ImpactLists(postings, key[1])) if key[0] == "impact" else (
                    lambda: PrefixLists(index.matrix, lengths, key[1]))
                built[key], row["lists_built_s"] = timed(build, 1)
            if key[0] == "impact":
                impact_row(setup, row, built[key])
            else:
                prefix_row(setup, row, built[key], twentieth[row["threshold"]])
        records.append(row)
        print(json.dumps(row), flush=True)
    exact_reads = np.mean([lengths[vectors.indices[vectors.indptr[r] : vectors.indptr[r + 1]]].sum()
                           for r in range(len(queries))])
    write_json_atomic(args.json, {
        "command": "python bench/candidate_curve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "kb": str(args.kb), "names": kb.num_names, "queries": len(queries),
        "exact_postings_per_query": float(exact_reads), "rare_depth": args.rare_depth, "threads": 1,
        "machine": machine(), "rows": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
