"""Names with identical TF-IDF vectors (spacy_angel.retrieval.twin_names): found exactly, held once in the ANN
graph, and every one of them returned by a search that reaches their vector."""
from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from conftest import kb_from
from spacy_angel.mapped_arrays import read_arrays, write_arrays
from spacy_angel.retrieval import twin_names
from spacy_angel.retrieval.ann_search import ANN_ARRAYS, AnnSearchSettings
from spacy_angel.retrieval.tfidf import NameIndex
from spacy_angel.retrieval.twin_names import TwinTable

NAMES = {"D1": ["breast cancer", "cancer breast"], "D2": ["cancer of the breast", "breast of the cancer"],
         "D3": ["colon cancer", "cancer colon", "colon cancer colon"], "D4": ["lung tumor"], "D5": ["tumor lung"],
         "D6": ["renal cyst"], "D7": ["cyst renal disease"]}


def index_of(names: dict, **ann) -> NameIndex:
    return NameIndex(kb_from(names), search="ann", ann=AnnSearchSettings(**ann) if ann else AnnSearchSettings()).fit()


def identical_vectors(index: NameIndex) -> dict:
    """The brute-force answer: name indices grouped by their dense row."""
    groups = defaultdict(list)
    for i, row in enumerate(index.matrix.toarray()):
        groups[row.tobytes()].append(i)
    return {g[0]: g[1:] for g in groups.values() if len(g) > 1}


def table_groups(table: TwinTable) -> dict:
    return {int(r): table.names[table.ptr[i] : table.ptr[i + 1]].tolist() for i, r in enumerate(table.reps)}


def test_twins_are_exactly_the_names_with_identical_vectors() -> None:
    index = index_of(NAMES)
    want = identical_vectors(index)
    assert len(want) == 4  # word order only: D1, D2, D3's first two, D4 / D5 across concepts
    assert table_groups(TwinTable.of(index.matrix)) == want


def test_row_hashes_do_not_depend_on_the_chunk_or_the_order_of_a_rows_entries() -> None:
    index = index_of(NAMES)
    hashes = twin_names.row_hashes(index.matrix)
    assert np.array_equal(hashes, twin_names.row_hashes(index.matrix, chunk=3))
    shuffled = index.matrix.copy()
    for row in range(shuffled.shape[0]):  # reverse each row's entries: the same vector
        lo, hi = shuffled.indptr[row], shuffled.indptr[row + 1]
        shuffled.indices[lo:hi], shuffled.data[lo:hi] = shuffled.indices[lo:hi][::-1].copy(), shuffled.data[lo:hi][::-1].copy()
    assert np.array_equal(hashes, twin_names.row_hashes(shuffled))
    assert len(set(hashes.tolist())) == len(index.kb.names) - 4


def test_a_hash_collision_never_merges_two_different_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    index = index_of(NAMES)
    monkeypatch.setattr(twin_names, "row_hashes", lambda m: np.zeros(m.shape[0], dtype=np.uint64))
    assert table_groups(TwinTable.of(index.matrix)) == identical_vectors(index)


needs_usearch = pytest.mark.skipif(importlib.util.find_spec("usearch") is None, reason="needs usearch (the ann extra)")


@needs_usearch
def test_the_graph_holds_one_node_per_vector_and_a_search_returns_every_twin() -> None:
    index = index_of(NAMES, rare_budget=0, graph_depth=1, expansion_search=16)
    index.build_ann(threads=1)
    assert len(index.graph.graph) == len(index.kb.names) - 4 == 7  # 4 twins (see above) are not nodes
    exact = NameIndex(index.kb).fit()
    for query in ("breast cancer", "colon cancer", "tumor lung"):
        got, want = index.nearest_names([query], 5)[0], exact.nearest_names([query], 5)[0]
        # one graph hit (depth 1) brings its twins: the exact top names with cosine 1, tie for tie
        assert sorted(i for i, s in got if s > 0.999) == sorted(i for i, s in want if s > 0.999)
        assert len([s for _, s in got if s > 0.999]) >= 2


@needs_usearch
def test_a_graph_saved_before_twins_still_loads(tmp_path: Path) -> None:
    untwinned = {f"D{i}": [f"name{i} x{i * 7 % 13}"] for i in range(40)}  # no two alike: every name in the graph
    index = index_of(untwinned)
    index.build_ann(threads=1)
    index.to_disk(tmp_path)
    arrays, meta = read_arrays(tmp_path / ANN_ARRAYS, mmap=False)
    assert len(arrays["twin_names"]) == 0
    write_arrays(tmp_path / ANN_ARRAYS, {"projection": arrays["projection"]}, meta)  # the earlier format
    old = NameIndex.from_disk(tmp_path, index.kb, search="ann")
    assert old.nearest_names(["name3 x8"], 3) == index.nearest_names(["name3 x8"], 3)
    # a damaged twin table: test_ann_search.py's broken-graph test ("twins")


def test_expand_adds_the_twins_of_reps_under_their_query_row() -> None:
    table = TwinTable(np.array([2, 5]), np.array([0, 2, 3]), np.array([7, 9, 6]))
    rows, keys = table.expand(np.array([0, 0, 1, 1]), np.array([2, 3, 5, 8]))
    assert list(zip(rows.tolist(), keys.tolist())) == [(0, 2), (0, 3), (1, 5), (1, 8), (0, 7), (0, 9), (1, 6)]
    assert table.is_rep_or_single(10).tolist() == [True] * 6 + [False, False, True, False]
    with pytest.raises(ValueError, match="twin table"):
        table.check(9)
