"""TF-IDF name index (spacy_angel.retrieval.tfidf, re-exported by training.evaluation.similarity_bins): ANGEL positives/negatives,
chunked nearest names, baseline, similarity bins, persistence."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.types import Candidate
from training.evaluation.similarity_bins import (
    DEFAULT_EDGES,
    NameIndex,
    bin_labels,
    similarity_bin,
    value_to_bin,
)

CONCEPTS = {
    "D1": ["type 2 diabetes mellitus", "diabetes mellitus type 2", "t2dm", "adult onset diabetes", "niddm"],
    "D2": ["type 1 diabetes mellitus", "insulin dependent diabetes", "iddm", "juvenile diabetes"],
    "D3": ["breast cancer", "breast carcinoma", "malignant neoplasm of breast", "mammary cancer"],
    "D4": ["lung cancer", "lung carcinoma", "pulmonary carcinoma"],
    "D5": ["hypertension", "high blood pressure", "htn"],
    "D6": ["hypotension", "low blood pressure"],
    "D7": ["myocardial infarction", "heart attack", "mi"],
    "D8": ["migraine"],
}


def make_kb() -> KnowledgeBase:
    kb = KnowledgeBase()
    for cid, names in CONCEPTS.items():
        for n in names:
            kb.add(cid, n)
    kb.add_alias_ids("D5", ["D5ALT"])
    return kb


@pytest.fixture(scope="module")
def index() -> NameIndex:
    return NameIndex(make_kb()).fit()


def brute_force(index: NameIndex, query: str, exclude: set = frozenset()) -> list:
    """Dense reference ranking: (-cosine, name index), cosine > 0, excluded concepts dropped."""
    q = index.transform([query]).toarray()[0].astype(np.float64)
    m = index.matrix.toarray().astype(np.float64)
    sims = m @ q
    rows = [
        (i, s)
        for i, s in enumerate(sims)
        if s > 1e-9 and not (set(index.kb.ids_for_index(i)) & exclude)
    ]
    return sorted(rows, key=lambda t: (-round(t[1], 5), t[0]))


def test_positives_are_gold_names_in_similarity_order(index: NameIndex) -> None:
    kb = index.kb
    top = index.top_names_for_concept("breast carcinomas", "D3", k=3)
    assert top[0] == "breast carcinoma"
    assert top[1] == "breast cancer"
    assert set(top) <= set(kb.names_for("D3"))
    for mention, cid in [("diabetes type two", "D1"), ("heart attacks", "D7"), ("lung ca", "D4")]:
        names = list(kb.names_for(cid))
        sims = index.similarity([mention] * len(names), names)
        expected = [names[j] for j in sorted(range(len(names)), key=lambda j: (-round(sims[j], 5), j))]
        assert index.top_names_for_concept(mention, cid, k=3) == expected[:3]
    assert index.top_names_for_concept("x", "D8", k=3) == ["migraine"]
    assert index.top_names_for_concept("x", "NOPE", k=3) == []


def test_negatives_never_from_gold_concept(index: NameIndex) -> None:
    kb = index.kb
    negs = index.negatives_for("type 2 diabetes", "D1", k=4)
    assert negs, "expected some negatives"
    assert negs[0] == "type 1 diabetes mellitus"
    for n in negs:
        assert "D1" not in kb.ids_for(n)
    ref = [kb.names[i] for i, _ in brute_force(index, "type 2 diabetes", {"D1"})[:4]]
    assert negs == ref
    # alias ids exclude the concept they alias
    for n in index.negatives_for("hypertension", "D5ALT", k=5):
        assert "D5" not in kb.ids_for(n)
    assert "hypotension" in index.negatives_for("hypertension", "D5ALT", k=5)


def test_nearest_names_matches_brute_force_and_chunking(index: NameIndex) -> None:
    queries = ["diabetes type 2", "breast cancers", "blood pressure high", "mi", "zzzz", "carcinoma lung"]
    excl = [{"D1"}, None, {"D5"}, set(), None, {"D4", "D3"}]
    full = index.nearest_names(queries, 5, exclude_ids=excl, query_chunk_size=1000, name_chunk_size=100000)
    for qcs, ncs in [(1, 1), (2, 3), (4, 7), (1, 5)]:
        chunked = index.nearest_names(queries, 5, exclude_ids=excl, query_chunk_size=qcs, name_chunk_size=ncs)
        assert chunked == full
    for q, ex, got in zip(queries, excl, full):
        ref = brute_force(index, q, set(ex or ()))[:5]
        assert [i for i, _ in got] == [i for i, _ in ref]
        assert np.allclose([s for _, s in got], [s for _, s in ref], atol=1e-5)
        assert all(a[1] >= b[1] for a, b in zip(got, got[1:]))
    assert full[4] == []  # no shared 3-gram, nothing returned
    # word-order variants have identical char_wb vectors: ties resolved by the smaller index
    d1 = [i for i, _ in full[0]]
    assert all(index.kb.names[i] not in CONCEPTS["D1"] for i in d1)


def test_large_k_returns_all_positive(index: NameIndex) -> None:
    res = index.nearest_names(["diabetes"], 1000, name_chunk_size=4)[0]
    ref = brute_force(index, "diabetes")
    assert [i for i, _ in res] == [i for i, _ in ref]


def test_link_baseline(index: NameIndex) -> None:
    out = index.link(["heart attacks", "type 2 diabetes", "hypertensive"], k=3)
    assert len(out) == 3
    assert all(isinstance(c, Candidate) for cands in out for c in cands)
    assert out[0][0].kb_ids == ("D7",) and out[0][0].name == "heart attack"
    assert out[1][0].kb_ids == ("D1",)
    assert out[2][0].kb_ids == ("D5",)
    for cands in out:
        ids = [i for c in cands for i in c.kb_ids]
        assert len(ids) == len(set(ids))  # de-duplicated concepts
        assert len(cands) <= 3
        assert all(a.score >= b.score for a, b in zip(cands, cands[1:]))
        assert all(0 < c.score <= 1.0 + 1e-6 for c in cands)


def test_link_shared_name_lists_all_ids() -> None:
    kb = KnowledgeBase()
    kb.add("A", "cold")
    kb.add("B", "cold")
    kb.add("B", "common cold")
    kb.add("C", "cold sore")
    idx = NameIndex(kb).fit()
    cands = idx.link(["cold"], k=3)[0]
    assert cands[0].kb_ids == ("A", "B") and cands[0].name == "cold"
    assert [c.kb_ids for c in cands[1:]] == [("C",)]  # B via "common cold" is not repeated


def test_similarity_and_bins(index: NameIndex) -> None:
    s = index.similarity(["heart attack", "htn", "abc"], ["heart attack", "hypertension", "xyz"])
    assert s.shape == (3,)
    assert s[0] == pytest.approx(1.0, abs=1e-5)
    assert s[2] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        index.similarity(["a"], [])
    assert similarity_bin(index, "heart attack", CONCEPTS["D7"]) == len(DEFAULT_EDGES) - 2
    assert similarity_bin(index, "mi", CONCEPTS["D1"]) == 0
    assert similarity_bin(index, "mi", []) is None
    assert value_to_bin(0.0) == 0 and value_to_bin(0.2) == 1 and value_to_bin(0.39) == 1 and value_to_bin(1.0) == 4
    assert bin_labels() == ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]


def test_short_abbreviations_have_features(index: NameIndex) -> None:
    """Why char_wb: a 2-letter name still gets 3-grams and can be matched."""
    assert index.transform(["mi"]).nnz > 0
    assert index.nearest_names(["mi"], 1)[0][0][0] == index.kb.name_index("mi")


def test_save_load_roundtrip(index: NameIndex, tmp_path) -> None:
    index.save(tmp_path)  # alias of to_disk
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["tfidf.json", "tfidf.safetensors"]
    vocab = json.loads((tmp_path / "tfidf.json").read_text())["vocabulary"]
    from safetensors.numpy import load_file  # the arrays file is plain safetensors: other tools read it

    assert len(vocab) == len(load_file(tmp_path / "tfidf.safetensors")["idf"])
    loaded = NameIndex.load(tmp_path, index.kb)
    assert abs(loaded.matrix - index.matrix).max() < 1e-7
    q = ["type 2 diabetes", "breast cancers"]
    for a, b in zip(loaded.nearest_names(q, 4), index.nearest_names(q, 4)):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-6)
    other = KnowledgeBase()
    other.add("X", "something")
    with pytest.raises(ValueError):
        NameIndex.load(tmp_path, other)


def test_unfitted_raises() -> None:
    with pytest.raises(RuntimeError):
        NameIndex(make_kb()).nearest_names(["x"], 1)
