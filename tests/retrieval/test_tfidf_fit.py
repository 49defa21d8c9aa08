"""The chunked TF-IDF fit (spacy_angel.retrieval.tfidf_fit) against scikit-learn's one-shot fit_transform:
the same vocabulary, idf and matrix bit for bit (entry order included: it fixes the float sums), for any
chunk size, and a mapped KB fits like an in-memory one."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import kb_from
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.tfidf import NameIndex
from spacy_angel.retrieval.tfidf_fit import fit_tfidf

NAMES = {
    "D1": ["breast cancer", "carcinoma of the breast", "mammary carcinoma", "cancer of breast"],
    "D2": ["ovarian cancer", "carcinoma of ovary", "ovarian neoplasm", "neoplasm ovarian"],
    "D3": ["type 2 diabetes mellitus", "t2dm", "adult onset diabetes", "ms", "a"],
    "D4": ["huntington disease", "huntington chorea", "chorea", "disease of huntington, adult-onset"],
}


def one_shot(index: NameIndex):
    vectorizer = index._new_vectorizer()
    return vectorizer, sp.csr_matrix(vectorizer.fit_transform(list(index.kb.names)), dtype=np.float32)


def assert_same(got, want) -> None:
    (gv, gm), (wv, wm) = got, want
    assert gv.vocabulary_ == wv.vocabulary_
    assert gv.idf_.dtype == wv.idf_.dtype and np.array_equal(gv.idf_, wv.idf_)
    for field in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(gm, field), getattr(wm, field)), field
    queries = ["breast cancers", "huntingtons", "zz"]
    assert np.array_equal(gv.transform(queries).toarray(), wv.transform(queries).toarray())


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_chunked_fit_equals_fit_transform_bit_for_bit(chunk: int) -> None:
    index = NameIndex(kb_from(NAMES))
    assert_same(fit_tfidf(index.kb.names, index._new_vectorizer, chunk=chunk), one_shot(index))


def test_the_entry_order_is_not_sorted_so_the_test_above_can_fail() -> None:
    """fit_transform leaves each row in first-appearance order; a fit that sorted rows (as transform does)
    would differ here, so the equality above checks the order, not only the values."""
    index = NameIndex(kb_from(NAMES))
    _, matrix = one_shot(index)
    assert any(np.any(np.diff(matrix.indices[matrix.indptr[r]:matrix.indptr[r + 1]]) < 0)
               for r in range(matrix.shape[0]))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(alphabet="abcdeilmnorst 2-", min_size=1, max_size=24), min_size=1, max_size=12, unique=True),
       st.integers(1, 5))
def test_any_names_any_chunk(names, chunk) -> None:
    kb = KnowledgeBase()
    for i, name in enumerate(names):
        kb.add(f"C{i}", name)
    if not kb.num_names:
        return
    index = NameIndex(kb)
    try:
        want = one_shot(index)
    except ValueError:  # scikit-learn refuses names without any 3-gram; so must we
        with pytest.raises(ValueError):
            fit_tfidf(kb.names, index._new_vectorizer, chunk=chunk)
        return
    assert_same(fit_tfidf(kb.names, index._new_vectorizer, chunk=chunk), want)


def test_a_mapped_kb_fits_like_the_in_memory_one(tmp_path) -> None:
    kb = kb_from(NAMES)
    kb.to_disk(tmp_path / "kb")
    mapped = KnowledgeBase.from_disk(tmp_path / "kb")
    a, b = NameIndex(kb).fit(), NameIndex(mapped).fit()
    assert a.nearest_names(["breast cancers", "chorea huntington"], 5) == b.nearest_names(
        ["breast cancers", "chorea huntington"], 5)
    assert np.array_equal(a.matrix.data, b.matrix.data)


@pytest.mark.parametrize("term_ranges,row_chunk,radix_terms", [(1, 1 << 20, 1 << 16), (3, 2, 1 << 16), (16, 5, 1 << 16),
                                                                (3, 2, 1)])
def test_streamed_postings_equal_the_transpose(term_ranges: int, row_chunk: int, radix_terms: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """kb build writes the term-major postings range by range (never whole in memory): the arrays must be
    the transpose's, names ascending within a term, for any split into ranges and row chunks, whether a
    range's terms are sorted as 16-bit keys or not."""
    from spacy_angel.retrieval import pruned_search
    from spacy_angel.retrieval.pruned_search import streamed_postings, term_postings

    monkeypatch.setattr(pruned_search, "RADIX_SORTED_TERMS", radix_terms)
    index = NameIndex(kb_from(NAMES)).fit()
    want = term_postings(index.matrix)
    indptr, data, indices = streamed_postings(index.matrix, np.int32, term_ranges=term_ranges, row_chunk=row_chunk)
    assert np.array_equal(indptr, want.indptr)
    assert np.array_equal(np.concatenate(list(data.pieces())), want.data)
    assert np.array_equal(np.concatenate(list(indices.pieces())), want.indices)


def test_a_saved_index_holds_the_streamed_postings_and_searches_alike(tmp_path) -> None:
    from spacy_angel.retrieval.pruned_search import term_postings

    kb = kb_from(NAMES)
    index = NameIndex(kb).fit()
    index.to_disk(tmp_path)  # postings never computed in memory: streamed into the file
    assert index._postings is None
    loaded = NameIndex.from_disk(tmp_path, kb, search="pruned", query_mass=1.0, rescore_depth=100)
    want = term_postings(index.matrix)
    for field in ("indptr", "indices", "data"):
        assert np.array_equal(np.asarray(getattr(loaded.postings, field)), getattr(want, field)), field
    queries = ["breast cancers", "huntington chorea", "ovarian"]
    assert loaded.nearest_names(queries, 5) == index.nearest_names(queries, 5)


def test_a_streamed_array_that_breaks_its_length_leaves_no_file(tmp_path) -> None:
    from spacy_angel.mapped_arrays import StreamedArray, write_arrays

    short = StreamedArray(5, np.dtype(np.float32), lambda: iter([np.ones(3, np.float32)]))
    with pytest.raises(ValueError, match="E460"):
        write_arrays(tmp_path / "x.safetensors", {"a": short}, {})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("processes,chunk", [(2, 3), (3, 1000), (8, 2)])
def test_a_fit_in_forked_processes_equals_fit_transform_bit_for_bit(processes: int, chunk: int, tmp_path) -> None:
    """Each process fits a range of the names; their first-appearance lists, joined in range order, must give
    one pass's entry order (the names are ordered so that a later range meets terms an earlier one has)."""
    kb = kb_from(NAMES)
    kb.to_disk(tmp_path / "kb")
    for source in (kb, KnowledgeBase.from_disk(tmp_path / "kb")):  # in memory and mapped
        index = NameIndex(source)
        assert_same(fit_tfidf(source.names, index._new_vectorizer, chunk=chunk, processes=processes), one_shot(index))


def test_the_default_forks_one_process_per_core_only_for_large_kbs() -> None:
    import os

    from spacy_angel.retrieval.tfidf_fit import PARALLEL_FROM, default_processes

    assert default_processes(PARALLEL_FROM - 1) == 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    assert default_processes(PARALLEL_FROM) == (min(4, cores) if sys.platform.startswith("linux") else 1)
    assert default_processes(PARALLEL_FROM, cores=1) == 1  # kb build --cores 1


def _processes_in_a_daemon(queue) -> None:
    from spacy_angel.retrieval.tfidf_fit import PARALLEL_FROM, default_processes

    queue.put(default_processes(PARALLEL_FROM))


def test_a_daemonic_worker_fits_in_one_process() -> None:
    """nlp.pipe(n_process=N) workers are daemonic, and a daemonic process may not start a pool: a worker
    that has to fit a missing index of a large KB must fit it alone, not fail."""
    import multiprocessing

    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    queue = context.Queue()
    worker = context.Process(target=_processes_in_a_daemon, args=(queue,), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert queue.get(timeout=10) == 1


FAULTS = [("the process fitting a KB of 200,000+ names killed (SIGKILL) while its forked workers run",
           "kb build / NameIndex.fit", "the workers die with it (`PR_SET_PDEATHSIG`); nothing is left running",
           "retrieval/test_tfidf_fit.py::test_a_killed_fit_takes_its_workers_with_it")]


_KILLED_FIT = """
import time
from sklearn.feature_extraction.text import TfidfVectorizer
from spacy_angel.retrieval.tfidf_fit import fit_tfidf

def slow(name):  # a slow analyzer keeps the workers busy long enough to kill their parent
    time.sleep(0.01)
    return [name[i:i + 3] for i in range(max(1, len(name) - 2))]

print("fitting", flush=True)
fit_tfidf([f"name {i}" for i in range(4000)],
          lambda vocabulary=None: TfidfVectorizer(analyzer=slow, vocabulary=vocabulary), processes=2)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="forks only on Linux")
def test_a_killed_fit_takes_its_workers_with_it() -> None:
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_FIT], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "fitting"
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 30
    while len(parent.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = parent.children()
    assert len(workers) == 2, "the control: the fit forked its two workers"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers outlived their killed parent: {[p.pid for p in alive]}"
