"""KB pre-training data: same-concept targets, other-concept negatives, streaming + chunking."""
from __future__ import annotations

import json

import pytest

from spacy_angel.kb.store import KnowledgeBase
from training.examples.pretraining import iter_pretraining_examples, write_pretraining_data
from training.evaluation.similarity_bins import NameIndex

CONCEPTS = {
    "D1": ["type 2 diabetes mellitus", "diabetes mellitus type ii", "t2dm", "adult onset diabetes"],
    "D2": ["type 1 diabetes mellitus", "insulin dependent diabetes", "juvenile diabetes"],
    "D3": ["breast cancer", "breast carcinoma", "malignant neoplasm of breast", "mammary cancer"],
    "D4": ["lung cancer", "lung carcinoma"],
    "D5": ["hypertension", "high blood pressure", "htn"],
    "D6": ["hypotension", "low blood pressure"],
    "D8": ["migraine"],
    "D9": ["asthma"],
}
DEFS = {"D8": "a recurrent headache disorder", "D3": "a malignant tumour of the breast"}


def make_kb() -> KnowledgeBase:
    kb = KnowledgeBase()
    for cid, names in CONCEPTS.items():
        for n in names:
            kb.add(cid, n, definition=DEFS.get(cid))
    return kb


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return make_kb()


@pytest.fixture(scope="module")
def index(kb: KnowledgeBase) -> NameIndex:
    return NameIndex(kb).fit()


def test_examples_targets_same_concept_negatives_other(kb: KnowledgeBase, index: NameIndex) -> None:
    exs = list(iter_pretraining_examples(kb, index, num_negatives=3, chunk_size=3))
    assert exs
    multi = sum(len(v) for v in CONCEPTS.values() if len(v) > 1)
    assert len(exs) == multi + len(DEFS)  # one per synonym anchor + one per definition
    for ex in exs:
        assert set(ex) == {"source", "prompt", "target", "rejected", "kb_id"}
        cid = ex["kb_id"]
        names = CONCEPTS[cid]
        assert ex["source"].startswith("START ")
        assert ex["prompt"].endswith(" is")
        anchor = ex["prompt"][: -len(" is")]
        assert anchor in names and ex["target"] in names
        assert f"START {anchor} END" in ex["source"]
        assert len(ex["rejected"]) <= 3  # empty only when no other name shares a 3-gram
        for neg in ex["rejected"]:
            assert neg not in names
            assert cid not in kb.ids_for(neg)
        if len(names) > 1:
            assert ex["target"] != anchor
            others = [n for n in names if n != anchor]
            sims = index.similarity([anchor] * len(others), others)
            assert index.similarity([anchor], [ex["target"]])[0] == pytest.approx(sims.max(), abs=1e-6)
        if "has synonyms such as" in ex["source"]:
            s2 = ex["source"].split("has synonyms such as ", 1)[1]
            assert s2 in names and s2 not in (anchor, ex["target"])
        # negatives are the TF-IDF-closest names of other concepts
        assert ex["rejected"] == index.negatives_for(anchor, cid, 3)
    assert sum(1 for ex in exs if len(ex["rejected"]) == 3) > len(exs) // 2
    assert not any(ex["kb_id"] == "D9" for ex in exs)  # single name, no definition
    mig = [ex for ex in exs if ex["kb_id"] == "D8"]
    assert len(mig) == 1
    assert mig[0]["source"] == "START migraine END is defined as a recurrent headache disorder"
    assert mig[0]["target"] == "migraine" and mig[0]["prompt"] == "migraine is"
    d3def = [ex for ex in exs if ex["kb_id"] == "D3" and "is defined as" in ex["source"]]
    assert len(d3def) == 1 and d3def[0]["prompt"] == "breast cancer is"
    assert d3def[0]["target"] == "breast carcinoma"
    # two-name concept: no third synonym to show, so the input never contains the answer
    d4 = [ex for ex in exs if ex["kb_id"] == "D4"]
    assert {ex["source"] for ex in d4} == {"START lung cancer END", "START lung carcinoma END"}


def test_chunking_does_not_change_output(kb: KnowledgeBase, index: NameIndex) -> None:
    a = list(iter_pretraining_examples(kb, index, chunk_size=1, seed=7))
    b = list(iter_pretraining_examples(kb, index, chunk_size=1000, seed=7))
    assert a == b
    c = list(iter_pretraining_examples(kb, index, chunk_size=1000, seed=8))
    # another seed reorders concepts and picks other context synonyms, but never other targets
    what = lambda x: (x["kb_id"], x["prompt"], x["target"])  # noqa: E731
    assert len(c) == len(a) and sorted(map(what, c)) == sorted(map(what, a))
    assert [json.dumps(x, sort_keys=True) for x in c] != [json.dumps(x, sort_keys=True) for x in a]


def test_custom_markers_and_caps(kb: KnowledgeBase, index: NameIndex) -> None:
    exs = list(
        iter_pretraining_examples(kb, index, start_marker="[S]", end_marker="[E]", max_names_per_concept=2, shuffle=False)
    )
    assert all(ex["source"].startswith("[S] ") and " [E]" in ex["source"] for ex in exs)
    per = {}
    for ex in exs:
        if "is defined as" not in ex["source"]:
            per[ex["kb_id"]] = per.get(ex["kb_id"], 0) + 1
    assert max(per.values()) == 2
    assert [ex["kb_id"] for ex in exs][:1] == ["D1"]  # no shuffle: KB order


def test_write_pretraining_data(kb: KnowledgeBase, tmp_path) -> None:
    path = tmp_path / "out" / "pretrain.jsonl"
    n = write_pretraining_data(kb, path, seed=0, chunk_size=2, show_progress=False)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert n == len(lines) > 0
    rows = [json.loads(line) for line in lines]
    assert all(r["target"] in CONCEPTS[r["kb_id"]] for r in rows)
    assert sorted(p.name for p in path.parent.iterdir()) == ["pretrain.jsonl"]
    n2 = write_pretraining_data(kb, path, max_examples=4, show_progress=False)
    assert n2 == 4 and len(path.read_text().splitlines()) == 4


def test_single_name_kb_produces_nothing() -> None:
    kb = KnowledgeBase()
    kb.add("A", "alpha")
    kb.add("B", "beta")
    assert list(iter_pretraining_examples(kb)) == []
