"""Pruned TF-IDF search (spacy_angel.retrieval.pruned_search) against exact search, and the mapped index
files: same links mapped or in memory, pages shared between processes, clear errors for broken files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import broken_artefact_faults, kb_from, mapped_pages_of_two_processes
from spacy_angel.errors import NameIndexError
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.tfidf import INDEX_ARRAYS, INDEX_CONFIG, NameIndex, load_or_build_index

NAMES = {
    "D1": ["breast cancer", "carcinoma of the breast", "mammary carcinoma"],
    "D2": ["ovarian cancer", "carcinoma of ovary", "ovarian neoplasm"],
    "D3": ["type 2 diabetes mellitus", "t2dm", "adult onset diabetes"],
    "D4": ["ataxia telangiectasia", "louis bar syndrome"],
    "D5": ["huntington disease", "huntington chorea", "chorea"],
    "D6": ["colorectal cancer", "colon cancer", "cancer of the colon", "hereditary nonpolyposis colorectal cancer"],
    "D7": ["myotonic dystrophy", "dystrophia myotonica", "steinert disease"],
    "D8": ["cancer", "malignant neoplasm", "malignancy"],
}
QUERIES = ["breast cancers", "cancer of ovary", "diabetes type ii", "telangiectasia ataxia", "hnpcc colon cancer",
           "myotonic dystrophy type 1", "chorea of huntington", "neoplasm", "xyz"]


def make_kb() -> KnowledgeBase:
    return kb_from(NAMES)


@pytest.fixture(scope="module")
def exact() -> NameIndex:
    return NameIndex(make_kb()).fit()


def pruned_like(index: NameIndex, **settings) -> NameIndex:
    other = NameIndex(index.kb, search="pruned", **settings)
    other.vectorizer, other.matrix = index.vectorizer, index.matrix
    return other


def test_pruned_search_with_the_whole_query_equals_exact_search(exact: NameIndex) -> None:
    """query_mass=1 and a depth above the KB size: every name sharing a 3-gram is re-scored (recall 1.0)."""
    pruned = pruned_like(exact, query_mass=1.0, rescore_depth=exact.kb.num_names)
    for k in (1, 3, 10, 100):
        assert pruned.nearest_names(QUERIES, k) == exact.nearest_names(QUERIES, k)
    assert pruned.link(QUERIES, 3) == exact.link(QUERIES, 3)


def test_pruned_search_defaults_find_the_exact_top_5_on_a_small_kb(exact: NameIndex) -> None:
    pruned = pruned_like(exact)  # query_mass 0.8, rescore_depth 400
    for got, want in zip(pruned.nearest_names(QUERIES, 5), exact.nearest_names(QUERIES, 5)):
        assert [i for i, _ in got] == [i for i, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-6)


def test_pruned_search_is_approximate_when_the_query_is_cut(exact: NameIndex) -> None:
    """With a tenth of the query mass and a depth of 1, only names sharing the heaviest 3-grams are
    seen: the result must differ from exact search somewhere (so the equal cases above are not trivial)."""
    cut = pruned_like(exact, query_mass=0.1, rescore_depth=1)
    assert cut.nearest_names(QUERIES, 5) != exact.nearest_names(QUERIES, 5)


def test_exclusions_fall_back_to_exact_search(exact: NameIndex) -> None:
    cut = pruned_like(exact, query_mass=0.1, rescore_depth=1)
    ex = [{"D1"}] * len(QUERIES)
    assert cut.nearest_names(QUERIES, 4, exclude_ids=ex) == exact.nearest_names(QUERIES, 4, exclude_ids=ex)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="abcdeilmnorst 2", min_size=1, max_size=20), min_size=1, max_size=6),
       st.integers(min_value=1, max_value=30))
def test_full_mass_pruned_search_equals_exact_for_any_query(queries, k) -> None:
    index = NameIndex(make_kb()).fit()
    pruned = pruned_like(index, query_mass=1.0, rescore_depth=index.kb.num_names)
    assert pruned.nearest_names(queries, k) == index.nearest_names(queries, k)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=40),
       st.sampled_from([0.1, 0.4]))
def test_best_merged_keeps_each_rows_best_names_of_the_sparse_product(seed, depth, density) -> None:
    """best_merged (posting lists merged per row) against SciPy's product: the same names and sums when
    depth keeps all, and the depth best scores (ties interchangeable) when it cuts; rows of one term (no
    merge) and of lists without a name in common (no sums) among them at density 0.1."""
    import scipy.sparse as sp

    from spacy_angel.retrieval.pruned_search import best_merged

    rng = np.random.default_rng(seed)
    weights = sp.random(5, 12, density=density, random_state=rng, dtype=np.float32, format="csr")
    postings = sp.random(12, 50, density=0.15, random_state=rng, dtype=np.float32, format="csr")
    product = (weights @ postings).toarray()
    rows, names = best_merged(weights, postings.sorted_indices(), depth)
    for row in range(5):
        found = names[rows == row]
        assert len(set(found.tolist())) == len(found)
        expected = np.sort(product[row][product[row] != 0])[::-1]
        if len(expected) <= depth:
            assert sorted(found.tolist()) == np.flatnonzero(product[row]).tolist()
        else:
            assert np.allclose(np.sort(product[row, found])[::-1], expected[:depth], rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=8))
def test_rescore_pairs_gives_each_querys_exact_top_k_of_its_pairs_listed_once_or_more(seed, k) -> None:
    """Pairs repeat (the graph and the rare lists find the same name): each query gets the top-k of its own
    distinct names by the cosine exact search computes, ties on the smaller name, cosine > 0."""
    import scipy.sparse as sp

    from spacy_angel.retrieval.pruned_search import rescore_pairs

    rng = np.random.default_rng(seed)
    matrix = sp.random(40, 15, density=0.3, random_state=rng, dtype=np.float32, format="csr")
    queries = sp.random(4, 15, density=0.4, random_state=rng, dtype=np.float32, format="csr")
    rows = rng.integers(0, 4, size=60)
    names = rng.integers(0, 40, size=60)
    got = rescore_pairs(queries, matrix, rows, names, k)
    scores = np.asarray((matrix @ queries.T).toarray().T, dtype=np.float32)  # summed as exact search sums
    for row in range(4):
        mine = sorted(set(names[rows == row].tolist()), key=lambda n: (-scores[row, n], n))[:k]
        assert [n for n, _ in got[row]] == [n for n in mine if scores[row, n] > 0]
        assert [v for _, v in got[row]] == [float(scores[row, n]) for n, _ in got[row]]  # bit-equal


@pytest.mark.parametrize("bad_setting", [{"search": "graph"}, {"query_mass": 0.0}, {"query_mass": 1.5},
                                         {"rescore_depth": 0}])
def test_bad_search_settings_are_refused(bad_setting) -> None:
    with pytest.raises(ValueError, match="E223"):
        NameIndex(make_kb(), **bad_setting)


# ---------------------------------------------------------------------------- mapped index files
def test_a_mapped_index_gives_the_same_links_as_one_in_memory(exact: NameIndex, tmp_path: Path) -> None:
    exact.to_disk(tmp_path)
    mapped = NameIndex.from_disk(tmp_path, make_kb(), search="pruned")
    in_memory = NameIndex.from_disk(tmp_path, make_kb(), mmap=False, search="pruned")
    assert isinstance(mapped.matrix.data, np.memmap) and isinstance(mapped.postings.indices, np.memmap)
    assert not isinstance(in_memory.matrix.data, np.memmap)
    assert mapped.link(QUERIES, 5) == in_memory.link(QUERIES, 5) == exact.link(QUERIES, 5)
    assert mapped.nearest_names(QUERIES, 5) == exact.nearest_names(QUERIES, 5)
    assert [c.tolist() for c in mapped.cosine(QUERIES[:2], [[0, 1], [2]])] == \
        [c.tolist() for c in exact.cosine(QUERIES[:2], [[0, 1], [2]])]


def test_a_version_1_index_still_loads(exact: NameIndex) -> None:
    fixture = Path(__file__).parents[1] / "fixtures" / "pipeline_v0_1" / "angel_linker"
    from spacy_angel.kb.store import KnowledgeBase as KB

    kb = KB.from_disk(fixture / "kb")
    old = NameIndex.from_disk(fixture / "index", kb)
    assert json.loads((fixture / "index" / INDEX_CONFIG).read_text())["format_version"] == 1
    assert old.nearest_names(["cancer"], 3) == NameIndex(kb).fit().nearest_names(["cancer"], 3)


INDEX_DAMAGE = {"truncated": "tfidf.safetensors cut short", "foreign": "tfidf.safetensors replaced by a foreign file",
                "other-build": "tfidf.json of one save beside the arrays of another (a kill between the two writes)"}

FAULTS = broken_artefact_faults(INDEX_DAMAGE, "NameIndex.from_disk / the linker's retriever",
                                "`[E213]`/`[E222]` naming the folder with a `kb build --index` hint; the linker refits and saves the index",
                                "retrieval/test_pruned_search.py::test_a_broken_index_file_gets_a_clear_error_and_a_rebuild_hint")


@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
def test_a_broken_index_file_gets_a_clear_error_and_a_rebuild_hint(exact: NameIndex, tmp_path: Path, damage, caplog) -> None:
    exact.to_disk(tmp_path)
    arrays = tmp_path / INDEX_ARRAYS
    if damage == "truncated":
        arrays.write_bytes(arrays.read_bytes()[:-50])
    elif damage == "foreign":
        arrays.write_bytes(b'{"not": "an index"}' * 10)
    else:  # arrays of a later save, the config of an earlier one (a crash between the two writes)
        config = (tmp_path / INDEX_CONFIG).read_text()
        exact.to_disk(tmp_path)
        (tmp_path / INDEX_CONFIG).write_text(config)
    with pytest.raises(NameIndexError, match="E213|E222") as err:
        NameIndex.from_disk(tmp_path, make_kb())
    assert str(tmp_path) in str(err.value) and "kb build --index" in str(err.value)
    rebuilt = load_or_build_index(make_kb(), tmp_path)  # what the linker does: refit, save, go on
    assert rebuilt.nearest_names(QUERIES, 3) == exact.nearest_names(QUERIES, 3)
    assert NameIndex.from_disk(tmp_path, make_kb()).nearest_names(QUERIES, 3) == exact.nearest_names(QUERIES, 3)


_TOUCH_INDEX = """
import numpy as np
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.tfidf import NameIndex
kb = KnowledgeBase()
for i in range(int(sys.argv[2])):
    kb.add(f"C{i}", f"name {i} of concept {i * 7919 % 100003} x{i * 31 % 977}")
index = NameIndex.from_disk(sys.argv[1], kb)
touched = float(np.asarray(index.matrix.data).sum() + np.asarray(index.postings.data).sum())
"""


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc smaps")
def test_two_processes_share_the_mapped_index_pages(tmp_path: Path) -> None:
    n = 20_000
    kb = KnowledgeBase()
    for i in range(n):
        kb.add(f"C{i}", f"name {i} of concept {i * 7919 % 100003} x{i * 31 % 977}")
    NameIndex(kb).fit().to_disk(tmp_path)
    rss, pss = mapped_pages_of_two_processes(_TOUCH_INDEX, INDEX_ARRAYS, str(tmp_path), str(n))
    assert rss > 100  # kB of index pages resident in the first process
    assert pss < 0.75 * rss, f"mapped pages are not shared: Rss {rss} kB, Pss {pss} kB"


def test_the_component_retriever_v2_passes_its_search_settings(tmp_path: Path) -> None:
    from spacy.util import registry

    import spacy_angel.pipeline.factories  # noqa: F401  (registers the retrievers, as spaCy's entry points do)

    make = registry.misc.get("spacy_angel.tfidf_retriever.v2")
    assert make()(make_kb(), None).search == "exact"
    index = make(search="pruned", query_mass=0.7, rescore_depth=50)(make_kb(), tmp_path)
    assert (index.search, index.query_mass, index.rescore_depth) == ("pruned", 0.7, 50)
    assert (tmp_path / INDEX_ARRAYS).is_file()  # fitted and saved beside the KB on first use
    again = make(search="pruned")(make_kb(), tmp_path)  # loaded, mapped, with the settings asked for
    assert again.search == "pruned" and isinstance(again.matrix.data, np.memmap)
    with pytest.raises(ValueError, match="E223"):
        make(search="graph")
    assert make(rare_budget=300_000, rare_depth=4_000)(make_kb(), tmp_path).ann.rare_budget == 300_000
    with pytest.raises(ValueError, match="E226"):
        make(search="ann", rare_depth=0)
