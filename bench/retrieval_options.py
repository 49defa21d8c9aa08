"""Candidate retrieval options at one KB size, side by side: speed and recall of the exact TF-IDF top-20.

Issue 27 asks for sublinear retrieval at 6M names (2,000 queries/s, recall@20 >= 99% of exact). This
script measures the options tried, on a KB folder that ``bench/kb_scale.py`` built (MEDIC names plus
synthetic word-order variants), with NCBI-disease dev mentions as queries and exact search as the
reference. Recall counts a name as found when its cosine equals the exact one at that rank (ties are
interchangeable), as ``bench/kb_scale.py`` does. One process, one option after the other, 2 threads:

* ``exact``: every name scored (``NameIndex``, the reference);
* ``pruned``: posting lists of each query's heaviest 3-grams (``search="pruned"``);
* ``bounded``: exact results through posting lists, reading terms (most query mass per posting first)
  until a score bound shows no unread name can reach the top 20 (written here; not in the package);
* ``words``: names sharing a KB word close (3-gram cosine) to the query's rarest words, re-scored;
* ``rp-dense``: a Gaussian random projection of the TF-IDF rows to 256 dims, brute-force top-300 in
  that space, exact re-scoring;
* ``svd-dense``: the same with a truncated SVD (fitted on 100k names) instead of the random projection;
* ``rp-ivf``: the random projection with an inverted file (k-means lists, 32 of 1,024 probed);
* ``rp-hnsw``: the random projection in an HNSW graph (``usearch``, int8, M 16; only if it is installed:
  it is not a dependency of the package).

    .venv/bin/python bench/retrieval_options.py --kb .cache/bench/kb_scale/kb-1000000 \\
        --json docs/results/retrieval_options.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, rank_aligned_recall, write_json_atomic  # noqa: E402
from kb_scale import read_queries  # noqa: E402

Hits = List[List[Tuple[int, float]]]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kb", type=Path, required=True, help="a KB folder with its TF-IDF index (bench/kb_scale.py)")
    p.add_argument("--queries", type=int, default=128, help="NCBI-disease dev mentions (exact search is the reference)")
    p.add_argument("--options", default="exact,pruned,bounded,words,rp-dense,svd-dense,rp-ivf,rp-hnsw")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def rescore(pairs_rows: np.ndarray, pairs_names: np.ndarray, index: Any, queries: List[str], k: int = 20) -> Hits:
    """Exact cosines of (query, name) candidate pairs (each pair once), each query's top k, by the package's
    own re-scoring (``pruned_search.rescore_pairs``), 64 queries at a time."""
    from spacy_angel.retrieval.pruned_search import rescore_pairs

    out: Hits = []
    for lo in range(0, len(queries), 64):
        sel = (pairs_rows >= lo) & (pairs_rows < lo + 64)
        out.extend(rescore_pairs(index.transform(queries[lo : lo + 64]), index.matrix, pairs_rows[sel] - lo,
                                 pairs_names[sel], k))
    return out


# ---------------------------------------------------------------------------- bounded exact search
def bounded(index: Any, queries: List[str], k: int = 20, budget: int = 2048, growth: int = 4,
            tightness: float = 1.0, depth: int = 64) -> Hits:
    """Exact top-k through posting lists with a score bound (see the module doc)."""
    import scipy.sparse as sp

    from spacy_angel.retrieval.pruned_search import best_partial

    postings = index.postings
    lengths = np.diff(postings.indptr)
    maxima = np.zeros(postings.shape[0], dtype=np.float32)
    filled = np.flatnonzero(lengths)
    maxima[filled] = np.maximum.reduceat(np.asarray(postings.data), np.asarray(postings.indptr[filled]))
    out: Hits = []
    for lo in range(0, len(queries), 64):
        q = index.transform(queries[lo : lo + 64])
        m = q.shape[0]
        plans = []
        for r in range(m):
            terms, w = q.indices[q.indptr[r] : q.indptr[r + 1]], q.data[q.indptr[r] : q.indptr[r + 1]].astype(np.float64)
            order = np.lexsort((terms, -(w * w) / np.maximum(lengths[terms], 1)))
            terms, w = terms[order], w[order]
            suffix_l2 = np.sqrt(np.concatenate([np.cumsum((w * w)[::-1])[::-1], [0.0]]))
            suffix_max = np.concatenate([np.cumsum((w * maxima[terms])[::-1])[::-1], [0.0]])
            plans.append((terms, w.astype(np.float32), np.cumsum(lengths[terms]), np.minimum(suffix_l2, suffix_max)))
        read, theta = [0] * m, np.zeros(m, dtype=np.float32)
        partial = sp.csr_matrix((m, index.matrix.shape[0]), dtype=np.float32)
        step = budget
        while True:
            more = [n if n == len(p[0]) or p[3][n] < tightness * t else
                    min(len(p[0]), max(n + 1, int(np.searchsorted(p[2], step, side="right"))))
                    for p, n, t in zip(plans, read, theta.tolist())]
            if more == read:
                break
            cols = [p[0][a:b] for p, a, b in zip(plans, read, more)]
            vals = [p[1][a:b] for p, a, b in zip(plans, read, more)]
            indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])])
            extra = sp.csr_matrix((np.concatenate(vals), np.concatenate(cols), indptr), shape=q.shape)
            partial = (partial + extra @ postings).tocsr()
            read = more
            best = rescore(*best_partial(partial, depth), index, queries[lo : lo + m], k)
            theta = np.maximum(theta, [h[k - 1][1] if len(h) >= k else 0.0 for h in best]).astype(np.float32)
            step *= growth
        bound = np.array([p[3][n] for p, n in zip(plans, read)], dtype=np.float32)
        row_of = np.repeat(np.arange(m), np.diff(partial.indptr))
        keep = partial.data + bound[row_of] >= theta[row_of] - 1e-4
        out.extend(rescore(row_of[keep], partial.indices[keep].astype(np.int64), index, queries[lo : lo + m], k))
    return out


# ---------------------------------------------------------------------------- word candidates
def word_candidates(index: Any, queries: List[str], budget: int = 20000, similar: int = 10,
                    min_sim: float = 0.3) -> Callable[[], Hits]:
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    from spacy_angel.kb.normalize import normalize_name

    counter = CountVectorizer(analyzer=str.split, binary=True, dtype=np.float32)
    postings = sp.csr_matrix(counter.fit_transform(index.kb.names).T)  # words x names
    words = counter.get_feature_names_out()
    sizes = np.diff(postings.indptr)
    word_index = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), dtype=np.float32)
    word_vectors = word_index.fit_transform(list(words))

    def run() -> Hits:
        rows, names = [], []
        for r, query in enumerate(queries):
            qw = normalize_name(query).split()
            sims = (word_index.transform(qw) @ word_vectors.T).tocsr() if qw else None
            groups = []
            for i in range(len(qw)):
                s, ids = sims.data[sims.indptr[i] : sims.indptr[i + 1]], sims.indices[sims.indptr[i] : sims.indptr[i + 1]]
                top = np.argsort(-s)[:similar]
                ids = ids[top[s[top] >= min_sim]]
                groups.append((int(sizes[ids].sum()), ids))
            total, found = 0, []
            for size, ids in sorted(groups, key=lambda g: g[0]):
                if total and total + size > budget:
                    break
                found.extend(postings.indices[postings.indptr[w] : postings.indptr[w + 1]] for w in ids)
                total += size
            cand = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
            rows.append(np.full(len(cand), r)), names.append(cand.astype(np.int64))
        return rescore(np.concatenate(rows), np.concatenate(names), index, queries)
    return run


# ---------------------------------------------------------------------------- dense projections
def project(index: Any, kind: str, dim: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """(name vectors float32, the terms x dim projection)."""
    rng = np.random.default_rng(0)
    m = index.matrix
    if kind == "svd":
        from sklearn.decomposition import TruncatedSVD

        sample = m[np.sort(rng.choice(m.shape[0], min(m.shape[0], 100_000), replace=False))]
        proj = TruncatedSVD(dim, algorithm="randomized", n_iter=4, random_state=0).fit(sample).components_.T
    else:
        proj = rng.standard_normal((m.shape[1], dim)) / np.sqrt(dim)
    proj = proj.astype(np.float32)
    vectors = np.empty((m.shape[0], dim), dtype=np.float32)
    for lo in range(0, m.shape[0], 262_144):
        vectors[lo : lo + 262_144] = m[lo : lo + 262_144] @ proj
    return vectors, proj


def dense_brute(index: Any, queries: List[str], vectors: np.ndarray, proj: np.ndarray, depth: int = 300) -> Hits:
    q = np.asarray(index.transform(queries) @ proj, dtype=np.float32)
    rows, names = [], []
    for lo in range(0, len(queries), 32):
        sims = q[lo : lo + 32] @ vectors.T
        top = np.argpartition(-sims, depth, axis=1)[:, :depth]
        rows.append(np.repeat(np.arange(lo, lo + len(top)), depth)), names.append(top.reshape(-1))
    return rescore(np.concatenate(rows), np.concatenate(names).astype(np.int64), index, queries)


def ivf(vectors: np.ndarray, lists: int = 1024) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(0)
    sample = vectors[np.sort(rng.choice(len(vectors), min(len(vectors), 50 * lists), replace=False))]
    centroids = MiniBatchKMeans(lists, batch_size=8192, n_init=1, max_iter=20, random_state=0).fit(sample).cluster_centers_
    centroids = centroids.astype(np.float32)
    norms = (centroids * centroids).sum(1)
    assign = np.concatenate([np.argmin(norms[None, :] - 2 * vectors[lo : lo + 65536] @ centroids.T, axis=1)
                             for lo in range(0, len(vectors), 65536)])
    order = np.argsort(assign, kind="stable")
    return centroids, order, np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=lists))])


def ivf_search(index: Any, queries: List[str], vectors: np.ndarray, proj: np.ndarray, built: Tuple, probe: int = 32,
               depth: int = 1000) -> Hits:
    centroids, order, ptr = built
    q = np.asarray(index.transform(queries) @ proj, dtype=np.float32)
    near = np.argpartition(-(2 * q @ centroids.T - (centroids * centroids).sum(1)[None, :]), probe, axis=1)[:, :probe]
    rows, names = [], []
    for r in range(len(queries)):
        members = order[np.concatenate([np.arange(ptr[c], ptr[c + 1]) for c in near[r]])]
        sims = vectors[members] @ q[r]
        if len(members) > depth:
            members = members[np.argpartition(-sims, depth)[:depth]]
        rows.append(np.full(len(members), r)), names.append(members)
    return rescore(np.concatenate(rows), np.concatenate(names).astype(np.int64), index, queries)


def hnsw(vectors: np.ndarray) -> Any:
    from usearch.index import Index

    graph = Index(ndim=vectors.shape[1], metric="cos", dtype="i8", connectivity=16, expansion_add=64)
    for lo in range(0, len(vectors), 262_144):
        graph.add(np.arange(lo, lo + len(vectors[lo : lo + 262_144]), dtype=np.uint64), vectors[lo : lo + 262_144], threads=2)
    return graph


def hnsw_search(index: Any, queries: List[str], proj: np.ndarray, graph: Any, ef: int = 512, depth: int = 400) -> Hits:
    graph.expansion_search = ef
    q = np.asarray(index.transform(queries) @ proj, dtype=np.float32)
    keys = graph.search(q, depth, threads=2).keys.astype(np.int64)
    rows = np.repeat(np.arange(len(queries)), depth)
    keys = keys.reshape(-1)
    ok = (keys >= 0) & (keys < len(index.kb.names))
    return rescore(rows[ok], keys[ok], index, queries)


# ---------------------------------------------------------------------------- main
def timed(fn: Callable[[], Hits]) -> Tuple[Hits, float]:
    t0 = time.perf_counter()
    hits = fn()
    return hits, time.perf_counter() - t0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(2)
    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.retrieval.tfidf import NameIndex

    kb = KnowledgeBase.from_disk(args.kb)
    index = NameIndex.from_disk(args.kb, kb)
    queries = read_queries(args.queries)
    index.nearest_names(queries[:4], 20)
    want, exact_s = timed(lambda: index.nearest_names(queries, 20))
    options = [o.strip() for o in args.options.split(",") if o.strip()]
    rows: List[Dict[str, Any]] = [{"option": "exact", "settings": "every name scored", "queries_per_s": len(queries) / exact_s,
                                   "recall_at_20": 1.0, "build_s": 0.0}]
    pruned = NameIndex(kb, search="pruned", query_mass=0.9, rescore_depth=400)
    pruned.vectorizer, pruned.matrix, pruned._postings = index.vectorizer, index.matrix, index.postings
    runs: Dict[str, Tuple[str, Callable[[], Callable[[], Hits]]]] = {
        "pruned": ("query_mass 0.9, rescore_depth 400", lambda: lambda: pruned.nearest_names(queries, 20)),
        "bounded": ("probe 2,048 postings, x4 per round, depth 64", lambda: lambda: bounded(index, queries)),
        "words": ("rarest words' 10 closest KB words, 20,000 names", lambda: word_candidates(index, queries)),
    }
    dense: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}

    def projected(kind: str) -> Tuple[np.ndarray, np.ndarray]:
        if kind not in dense:
            dense[kind] = project(index, kind)
        return dense[kind]

    runs["rp-dense"] = ("random projection 256, top 300 re-scored",
                        lambda: (lambda v: lambda: dense_brute(index, queries, *v))(projected("rp")))
    runs["svd-dense"] = ("truncated SVD 256 (100k-name fit), top 300 re-scored",
                         lambda: (lambda v: lambda: dense_brute(index, queries, *v))(projected("svd")))
    runs["rp-ivf"] = ("random projection 256, 1,024 k-means lists, 32 probed, top 1,000 re-scored",
                      lambda: (lambda v, b: lambda: ivf_search(index, queries, *v, b))(projected("rp"), ivf(projected("rp")[0])))
    runs["rp-hnsw"] = ("random projection 256, usearch HNSW int8 cos, M 16, ef 512, top 400 re-scored",
                       lambda: (lambda v, g: lambda: hnsw_search(index, queries, v[1], g))(projected("rp"), hnsw(projected("rp")[0])))
    for name in options:
        if name == "exact" or name not in runs:
            continue
        if name == "rp-hnsw":
            try:
                import usearch  # noqa: F401
            except ImportError:
                print("rp-hnsw skipped: usearch is not installed", flush=True)
                continue
        settings, prepare = runs[name]
        t0 = time.perf_counter()
        search = prepare()
        build_s = time.perf_counter() - t0
        got, seconds = timed(search)
        rows.append({"option": name, "settings": settings, "queries_per_s": len(queries) / seconds,
                     "recall_at_20": rank_aligned_recall(want, got), "build_s": build_s})
        print(json.dumps(rows[-1]), flush=True)
    command = "python bench/retrieval_options.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {"command": command, "kb": str(args.kb), "names": kb.num_names, "queries": len(queries),
              "machine": machine(), "options": rows}
    if args.json:
        write_json_atomic(args.json, record)
    for r in rows:
        print(f"{r['option']:10s} {r['queries_per_s']:9.1f} q/s  recall@20 {r['recall_at_20']:.4f}  build {r['build_s']:.0f} s  ({r['settings']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
