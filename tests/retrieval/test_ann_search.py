"""ANN search (spacy_angel.retrieval.ann_search) against exact TF-IDF search, its files beside the KB, and
clear errors for broken or stale graph files."""
from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import broken_artefact_faults, kb_from, mapped_pages_of_two_processes
from spacy_angel.errors import NameIndexError
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.mapped_arrays import read_arrays, write_arrays
from spacy_angel.retrieval.ann_search import ANN_ARRAYS, ANN_GRAPH, AnnSearchSettings, rare_terms, recall_of_exact
from spacy_angel.retrieval.kb_build import build_kb
from spacy_angel.retrieval.tfidf import NameIndex, load_or_build_index

pytestmark = pytest.mark.skipif(importlib.util.find_spec("usearch") is None, reason="needs usearch (the ann extra)")

WORDS = ("breast ovarian colon lung renal hepatic cardiac muscular neural retinal cancer carcinoma neoplasm tumor "
         "syndrome disease dystrophy atrophy deficiency familial hereditary congenital juvenile adult type acute "
         "chronic primary secondary benign malignant").split()
QUERIES = ["breast cancer", "familial colon carcinoma", "dm", "retinal dystrophy type 2", "hereditary tumour",
           "muscular atrophy", "cardiac", "ca", "chronic renal disease", "juvenile neural syndrome"]


def make_kb(n: int = 800) -> KnowledgeBase:
    rng = random.Random(0)
    names = {"D0": ["dm", "diabetes mellitus dm"]}
    for i in range(1, n):
        names[f"D{i}"] = [" ".join(rng.sample(WORDS, rng.randint(1, 4))) + f" {i % 7 or ''}".rstrip()]
    return kb_from(names)


@pytest.fixture(scope="module")
def exact() -> NameIndex:
    return NameIndex(make_kb()).fit()


def ann_like(index: NameIndex, **settings) -> NameIndex:
    other = NameIndex(index.kb, search="ann", ann=AnnSearchSettings(**settings))
    other.vectorizer, other.matrix, other.fit_id = index.vectorizer, index.matrix, index.fit_id
    return other.build_ann(threads=1)


def test_the_graph_alone_finds_the_exact_top_10_on_a_tiny_kb(exact: NameIndex) -> None:
    """No rare 3-grams (rare_budget 0): the projection and the graph walk must find every exact neighbour."""
    ann = ann_like(exact, rare_budget=0, graph_depth=60, expansion_search=120)
    want, got = exact.nearest_names(QUERIES, 10), ann.nearest_names(QUERIES, 10)
    assert recall_of_exact(want, got) == 1.0
    assert [[s for _, s in row] for row in got] == [[s for _, s in row] for row in want]  # exact cosines, best first


def test_a_shallow_graph_walk_is_approximate_and_the_rare_3grams_complete_it(exact: NameIndex) -> None:
    shallow = ann_like(exact, rare_budget=0, graph_depth=1, expansion_search=1)
    want = exact.nearest_names(QUERIES, 10)
    # k names from a walk with one candidate in flight: some neighbours are missed, so the check below can fail
    assert recall_of_exact(want, shallow.nearest_names(QUERIES, 10)) < 0.95
    with_rare = ann_like(exact, rare_budget=10_000, rare_depth=200, graph_depth=1, expansion_search=1)
    assert recall_of_exact(want, with_rare.nearest_names(QUERIES, 10)) == 1.0


def test_recall_of_exact_counts_ties_as_interchangeable() -> None:
    exact = [[(1, 1.0), (2, 0.5), (3, 0.5)], [(4, 0.9)]]
    assert recall_of_exact(exact, [[(1, 1.0), (9, 0.5), (3, 0.5)], [(4, 0.9)]]) == 1.0  # 9 ties with 2
    assert recall_of_exact(exact, [[(9, 0.5), (3, 0.5), (8, 0.4)], [(4, 0.9)]]) == 0.75  # the best name missed
    assert recall_of_exact(exact, [[], []]) == 0.0


def test_threads_search_chunks_at_once_with_the_same_results(exact: NameIndex) -> None:
    queries = QUERIES * 15  # 150 queries: three chunks of 64
    one, two = ann_like(exact, threads=1), ann_like(exact, threads=2)
    two.graph = one.graph
    assert two.nearest_names(queries, 10) == one.nearest_names(queries, 10)
    assert one.nearest_names(queries, 10)[:len(QUERIES)] == one.nearest_names(QUERIES, 10)


def test_rare_terms_keeps_the_shortest_posting_lists_within_the_budget() -> None:
    queries = sp.csr_matrix(np.array([[0.5, 0.5, 0.5, 0.5], [0.0, 1.0, 0.0, 0.0]], dtype=np.float32))
    lengths = np.array([5, 100, 10, 50])
    # row 0: lists of 5 and 10 entries fit in 15; row 1 keeps its one term although its list is longer
    assert rare_terms(queries, lengths, 15).toarray().tolist() == [[0.5, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]]
    assert rare_terms(queries, lengths, 1).toarray()[0].tolist() == [0.5, 0.0, 0.0, 0.0]
    assert rare_terms(queries, lengths, 10**6).toarray().tolist() == queries.toarray().tolist()
    assert queries.nnz == 5  # the input is not edited


def test_kb_build_ann_writes_a_mapped_graph_that_links_like_the_in_memory_one(tmp_path: Path) -> None:
    source = tmp_path / "names.tsv"
    kb = make_kb()
    source.write_text("".join(f"{cid}\t{name}\n" for cid, name in kb), encoding="utf-8")
    build_kb([source], tmp_path / "kb", format="tsv", ann=True)
    assert (tmp_path / "kb" / ANN_GRAPH).is_file() and (tmp_path / "kb" / ANN_ARRAYS).is_file()
    loaded_kb = KnowledgeBase.from_disk(tmp_path / "kb")
    mapped = NameIndex.from_disk(tmp_path / "kb", loaded_kb, search="ann")
    in_memory = NameIndex(loaded_kb, search="ann").fit()
    exact = NameIndex.from_disk(tmp_path / "kb", loaded_kb)
    assert isinstance(mapped.graph.projection, np.memmap)
    want = exact.nearest_names(QUERIES, 10)
    assert recall_of_exact(want, mapped.nearest_names(QUERIES, 10)) == 1.0
    assert recall_of_exact(want, in_memory.nearest_names(QUERIES, 10)) == 1.0
    assert mapped.link(QUERIES, 5) == exact.link(QUERIES, 5)


GRAPH_DAMAGE = {"truncated": "tfidf-ann.usearch cut short", "foreign": "tfidf-ann.usearch replaced by a foreign file",
                "stale": "the graph of an earlier KB beside the index refitted for a changed KB",
                "missing": "an index built without --ann",
                "twins": "tfidf-ann.safetensors with a twin table naming a name the KB lacks",
                "arrays truncated": "tfidf-ann.safetensors (projection, twin table) cut short"}
NAMED = {"twins": ANN_ARRAYS, "stale": ANN_ARRAYS, "arrays truncated": ANN_ARRAYS}  # else the graph file

FAULTS = broken_artefact_faults(GRAPH_DAMAGE, "NameIndex.from_disk(search='ann') / the linker's retriever",
                                "`[E224]` naming the damaged file with a `kb build --ann` hint; the linker rebuilds and saves the index",
                                "retrieval/test_ann_search.py::test_a_broken_graph_gets_a_clear_error_and_a_rebuild_hint")


@pytest.mark.parametrize("damage", list(GRAPH_DAMAGE))
def test_a_broken_graph_gets_a_clear_error_and_a_rebuild_hint(exact: NameIndex, tmp_path: Path, damage: str) -> None:
    kb = make_kb()
    index = NameIndex(kb, search="ann").fit()
    index.to_disk(tmp_path)
    graph = tmp_path / ANN_GRAPH
    if damage == "truncated":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    elif damage == "foreign":
        graph.write_bytes(b"not a graph" * 100)
    elif damage == "twins":
        arrays, meta = read_arrays(tmp_path / ANN_ARRAYS, mmap=False)
        assert len(arrays["twin_names"])  # make_kb has word-order variants; their count stays right
        arrays["twin_names"] = arrays["twin_names"].copy()
        arrays["twin_names"][0] = len(kb.names)
        write_arrays(tmp_path / ANN_ARRAYS, arrays, meta)
    elif damage == "arrays truncated":
        arrays_file = tmp_path / ANN_ARRAYS
        arrays_file.write_bytes(arrays_file.read_bytes()[: arrays_file.stat().st_size // 2])
    elif damage == "stale":  # the KB changed and its index was refitted without --ann: the old graph stays
        kb = make_kb(801)
        NameIndex(kb).fit().to_disk(tmp_path)
    else:
        graph.unlink()
    with pytest.raises(NameIndexError, match="E224") as err:
        NameIndex.from_disk(tmp_path, kb, search="ann")
    assert str(tmp_path / NAMED.get(damage, ANN_GRAPH)) in str(err.value) and "kb build --ann" in str(err.value)
    assert damage != "twins" or "twin table does not fit" in str(err.value)
    assert NameIndex.from_disk(tmp_path, kb).search == "exact"  # the TF-IDF index itself still loads
    index_file = (tmp_path / "tfidf.safetensors").stat().st_mtime_ns
    rebuilt = load_or_build_index(kb, tmp_path, search="ann")  # what the linker does: rebuild, save, go on
    assert (tmp_path / "tfidf.safetensors").stat().st_mtime_ns == index_file  # the sound TF-IDF index is kept
    want = (exact if damage != "stale" else NameIndex(kb).fit()).nearest_names(QUERIES, 5)
    assert recall_of_exact(want, rebuilt.nearest_names(QUERIES, 5)) == 1.0
    assert recall_of_exact(want, NameIndex.from_disk(tmp_path, kb, search="ann").nearest_names(QUERIES, 5)) == 1.0


def test_a_refit_of_the_same_kb_keeps_its_graph_valid(tmp_path: Path) -> None:
    kb = make_kb()
    first = NameIndex(kb, search="ann").fit()
    first.to_disk(tmp_path)
    again = NameIndex(kb).fit()
    assert again.fit_id == first.fit_id and NameIndex(make_kb(801)).fit().fit_id != first.fit_id
    again.to_disk(tmp_path)  # the same matrix: the graph beside it still belongs to it
    assert NameIndex.from_disk(tmp_path, kb, search="ann").graph is not None


def test_bad_ann_settings_and_a_missing_usearch_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="E226"):
        AnnSearchSettings(graph_depth=0)
    monkeypatch.setitem(sys.modules, "usearch.index", None)
    with pytest.raises(ImportError, match="E225.*spacy-angel\\[ann\\]"):
        NameIndex(make_kb(50), search="ann").fit()


_TOUCH_GRAPH = """
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.tfidf import NameIndex
kb = KnowledgeBase.from_disk(sys.argv[1])
index = NameIndex.from_disk(sys.argv[1], kb, search="ann")
index.graph.candidates(index.matrix, 1, 16)  # a walk to every name reads (nearly) every vector page
index.nearest_names(["name 12 of concept 7"] * 8, 5)
"""


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc smaps")
def test_two_processes_share_the_mapped_graph_pages(tmp_path: Path) -> None:
    source = tmp_path / "names.tsv"
    source.write_text("".join(f"C{i}\tname {i} of concept {i * 7919 % 100003} x{i * 31 % 977}\n" for i in range(20_000)),
                      encoding="utf-8")
    build_kb([source], tmp_path / "kb", format="tsv", ann=True)
    rss, pss = mapped_pages_of_two_processes(_TOUCH_GRAPH, ANN_GRAPH, str(tmp_path / "kb"))
    assert rss > 1000  # kB of graph pages resident: 20,000 int8 vectors of 256 dimensions are 5 MB
    assert pss < 0.75 * rss, f"mapped graph pages are not shared: Rss {rss} kB, Pss {pss} kB"
