"""spacy_angel.retrieval.tfidf: the TF-IDF name index saved beside the KB (.npz + JSON), stale-index
rebuilds, cosine of given names, and the lazy scikit-learn import."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import kb_from
from spacy_angel.mapped_arrays import read_arrays
from spacy_angel.retrieval.tfidf import INDEX_ARRAYS, INDEX_CONFIG, NameIndex, load_or_build_index
from spacy_angel.errors import NameIndexError
from spacy_angel.kb.store import KnowledgeBase

NAMES = {
    "D1": ["type 2 diabetes mellitus", "diabetes mellitus type 2", "t2dm", "niddm"],
    "D2": ["type 1 diabetes mellitus", "insulin dependent diabetes", "iddm"],
    "D3": ["breast cancer", "breast carcinoma", "malignant neoplasm of breast"],
    "D4": ["lung cancer", "pulmonary carcinoma"],
    "D5": ["hypertension", "high blood pressure", "htn"],
    "D6": ["hypotension", "low blood pressure"],
    "D7": ["myocardial infarction", "heart attack", "mi"],
}
QUERIES = ["type two diabetes", "breast cancers", "heart attacks", "blood pressure high", "mi", "zzz"]


def make_kb(extra: dict = {}) -> KnowledgeBase:
    return kb_from({**NAMES, **extra})


@pytest.fixture(scope="module")
def index() -> NameIndex:
    return NameIndex(make_kb()).fit()


def test_round_trip_equals_a_fresh_fit(index: NameIndex, tmp_path: Path) -> None:
    index.to_disk(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [INDEX_CONFIG, INDEX_ARRAYS]
    arrays, meta = read_arrays(tmp_path / INDEX_ARRAYS)  # plain numeric arrays, mapped; no pickle anywhere
    assert all(isinstance(a, np.memmap) and a.dtype.kind in "fiu" for a in arrays.values() if a.size)
    assert meta["kb_fingerprint"] == index.kb.fingerprint()
    config = json.loads((tmp_path / INDEX_CONFIG).read_text())
    assert config["kb_fingerprint"] == index.kb.fingerprint() and config["num_names"] == index.kb.num_names
    loaded = NameIndex.from_disk(tmp_path, make_kb())  # an equal KB built separately
    fresh = NameIndex(make_kb()).fit()
    assert abs(loaded.matrix - fresh.matrix).max() < 1e-7
    for got, want in zip(loaded.nearest_names(QUERIES, 5), fresh.nearest_names(QUERIES, 5)):
        assert [i for i, _ in got] == [i for i, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
    assert loaded.link(QUERIES, 3) == fresh.link(QUERIES, 3)
    assert np.allclose(loaded.transform(QUERIES).toarray(), fresh.transform(QUERIES).toarray())
    assert NameIndex.load.__func__ is NameIndex.from_disk.__func__  # the old names are aliases
    assert NameIndex.save is NameIndex.to_disk


def test_from_disk_refuses_another_kb_or_other_settings(index: NameIndex, tmp_path: Path) -> None:
    index.to_disk(tmp_path)
    with pytest.raises(NameIndexError, match="another KB"):
        NameIndex.from_disk(tmp_path, make_kb({"D8": ["migraine"]}))
    with pytest.raises(NameIndexError, match="ngram_range"):
        NameIndex.from_disk(tmp_path, index.kb, ngram_range=(2, 4))
    (tmp_path / INDEX_CONFIG).write_text("{broken")
    with pytest.raises(NameIndexError, match="cannot read"):
        NameIndex.from_disk(tmp_path, index.kb)
    with pytest.raises(NameIndexError, match="cannot read"):
        NameIndex.from_disk(tmp_path / "nowhere", index.kb)


def test_load_or_build_index_rebuilds_when_the_kb_changes(tmp_path: Path) -> None:
    kb = make_kb()
    first = load_or_build_index(kb, tmp_path)  # nothing saved yet: fit and save
    assert (tmp_path / INDEX_CONFIG).is_file()
    stamp = (tmp_path / INDEX_ARRAYS).stat().st_mtime_ns
    again = load_or_build_index(kb, tmp_path)  # loaded, not refitted
    assert (tmp_path / INDEX_ARRAYS).stat().st_mtime_ns == stamp
    assert again.nearest_names(QUERIES, 3) == first.nearest_names(QUERIES, 3)
    bigger = make_kb({"D8": ["migraine", "migraine disorder"]})
    rebuilt = load_or_build_index(bigger, tmp_path)
    assert rebuilt.matrix.shape[0] == bigger.num_names
    assert json.loads((tmp_path / INDEX_CONFIG).read_text())["kb_fingerprint"] == bigger.fingerprint()
    assert load_or_build_index(kb).fitted  # no path: fit in memory only


def test_cosine_agrees_with_nearest_names(index: NameIndex) -> None:
    hits = index.nearest_names(QUERIES, 6)
    got = index.cosine(QUERIES, [[i for i, _ in h] for h in hits])
    assert [len(g) for g in got] == [len(h) for h in hits]
    for g, h in zip(got, hits):
        assert g.dtype == np.float32
        assert np.allclose(g, [s for _, s in h], atol=1e-6)
    # arbitrary names, in the given order, including ones nearest_names would not return (cosine 0)
    n = index.kb.num_names
    picks = [[n - 1, 0, 3], [], [5, 5]]
    dense = index.matrix.toarray().astype(np.float64)
    queries = index.transform(QUERIES[:3]).toarray().astype(np.float64)
    for q, (g, names) in enumerate(zip(index.cosine(QUERIES[:3], picks), picks)):
        assert np.allclose(g, dense[names] @ queries[q], atol=1e-6)
    assert [len(g) for g in index.cosine(["a", "b"], [[], []])] == [0, 0]
    with pytest.raises(IndexError):
        index.cosine(["a"], [[n]])
    with pytest.raises(ValueError):
        index.cosine(["a", "b"], [[0]])


def test_importing_candidates_does_not_import_sklearn() -> None:
    probe = "import sys, spacy_angel.retrieval.tfidf, spacy_angel.kb.store; print(int('sklearn' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
