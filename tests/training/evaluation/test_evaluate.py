"""Acc@k, reports, bootstrap statistics, report comparison and the similarity-bin plot."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.types import Candidate, Mention
from training.evaluation.metrics import (
    accuracy_at_k,
    bootstrap_ci,
    compare_reports,
    evaluation_report,
    first_correct_rank,
    paired_bootstrap_test,
    plot_bins,
    write_report,
)
from spacy_angel.retrieval.tfidf import NameIndex


def C(*ids: str, name: str = "n", score: float = -0.1) -> Candidate:
    return Candidate(kb_ids=tuple(ids), name=name, score=score)


def make_kb() -> KnowledgeBase:
    kb = KnowledgeBase()
    for cid, names in {
        "D1": ["type 2 diabetes mellitus", "niddm"],
        "D2": ["type 1 diabetes mellitus", "iddm"],
        "D3": ["breast cancer", "breast carcinoma"],
        "D5": ["hypertension", "high blood pressure"],
        "D7": ["myocardial infarction", "heart attack"],
    }.items():
        for n in names:
            kb.add(cid, n)
    kb.add_alias_ids("D5", ["D5ALT"])
    return kb


def test_accuracy_at_k_hand_made() -> None:
    preds = [
        [C("A"), C("B")],  # rank 1
        [C("B"), C("A")],  # rank 2
        [C("B"), C("E"), C("D")],  # composite gold (C, D): rank 3
        [C("B")],  # never
        [C("X", "A")],  # ambiguous name carrying the gold id: rank 1
    ]
    gold = [("A",), ("A",), ("C", "D"), ("Z",), ("A",)]
    acc = accuracy_at_k(preds, gold)
    assert acc["n"] == 5
    assert acc["acc@1"] == pytest.approx(2 / 5)
    assert acc["acc@2"] == pytest.approx(3 / 5)
    assert acc["acc@3"] == pytest.approx(4 / 5)
    assert acc["acc@4"] == acc["acc@5"] == pytest.approx(4 / 5)
    assert accuracy_at_k([[]], [("A",)], ks=(1,))["acc@1"] == 0.0
    with pytest.raises(ValueError):
        accuracy_at_k(preds, gold[:2])


def test_alias_ids_count_only_with_kb() -> None:
    kb = make_kb()
    preds = [[C("D5")], [C("D1"), C("D5")], [C("D3")]]
    gold = [("D5ALT",), ("MESH:D5",), ("D3",)]
    assert accuracy_at_k(preds, gold, ks=(1, 2))["acc@1"] == pytest.approx(1 / 3)
    with_kb = accuracy_at_k(preds, gold, ks=(1, 2), kb=kb)
    assert with_kb["acc@1"] == pytest.approx(2 / 3)
    assert with_kb["acc@2"] == pytest.approx(1.0)
    assert first_correct_rank([C("D1"), C("D5")], ("D5ALT",), kb) == 2
    assert first_correct_rank([C("D1")], ("UNKNOWN",), kb) is None


def test_evaluation_report_and_write(tmp_path) -> None:
    kb = make_kb()
    index = NameIndex(kb).fit()
    mentions = [
        Mention.bare("heart attack", ("D7",), doc_id="d1"),
        Mention("d2", "she has high blood pressure today", 8, 27, ("D5ALT",)),
        Mention.bare("niddm", ("D1", "D2")),
    ]
    preds = [
        [C("D7", name="heart attack", score=-0.01)],
        [C("D1", name="niddm"), C("D5", name="hypertension")],
        [],
    ]
    rep = evaluation_report(mentions, preds, name_index=index)
    ents = rep["mentions"]
    assert [e["mention"] for e in ents] == ["heart attack", "high blood pressure", "niddm"]
    assert [e["rank"] for e in ents] == [1, 2, None]
    assert [e["correct@1"] for e in ents] == [True, False, False]
    assert ents[0]["candidates"] == [[["D7"], "heart attack", -0.01]]
    assert ents[1]["gold_ids"] == ["D5ALT"]
    # exact gold names -> top bin; all three mentions are gold names
    assert [e["similarity_bin"] for e in ents] == [4, 4, 4]
    s = rep["summary"]
    assert s["acc@1"] == pytest.approx(1 / 3) and s["acc@2"] == pytest.approx(2 / 3) and s["n"] == 3
    assert s["bins"][4]["n"] == 3 and s["bins"][0]["acc@1"] is None
    path = tmp_path / "sub" / "report.json"
    write_report(rep, path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(rep))
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]  # no temp file left
    rep_nobins = evaluation_report(mentions, preds, kb=kb)
    assert "similarity_bin" not in rep_nobins["mentions"][0]


def test_bootstrap_ci_contains_mean() -> None:
    rng = np.random.default_rng(1)
    correct = (rng.random(300) < 0.7).astype(float)
    mean, lo, hi = bootstrap_ci(correct, n=2000, seed=3)
    assert mean == pytest.approx(correct.mean())
    assert lo < mean < hi
    assert hi - lo < 0.2
    assert bootstrap_ci(correct, n=2000, seed=3) == (mean, lo, hi)  # seeded
    small = bootstrap_ci(correct[:30], n=2000, seed=3)
    assert small[2] - small[1] > hi - lo
    cont = rng.random(100)  # non-binary values go through index resampling
    m2, lo2, hi2 = bootstrap_ci(cont, n=500)
    assert lo2 < m2 < hi2
    with pytest.raises(ValueError):
        bootstrap_ci(np.array([]))


def test_paired_test_better_vs_identical() -> None:
    rng = np.random.default_rng(0)
    b = (rng.random(200) < 0.5).astype(float)
    a = np.maximum(b, (rng.random(200) < 0.8).astype(float))  # a right wherever b is, and more
    res = paired_bootstrap_test(a, b, n=5000)
    assert res["diff"] > 0.2
    assert res["p_value"] < 0.01
    assert res["mcnemar_p"] < 0.001
    assert res["b_only_correct"] == 0 and res["a_only_correct"] > 0
    assert res["diff_ci95"][0] > 0
    same = paired_bootstrap_test(b, b, n=2000)
    assert same["diff"] == 0.0
    assert same["p_value"] > 0.5 and same["mcnemar_p"] == 1.0
    # a small noisy difference is not significant
    c = b.copy()
    c[np.flatnonzero(b == 0)[:2]] = 1
    c[np.flatnonzero(b == 1)[:1]] = 0
    assert paired_bootstrap_test(c, b, n=2000)["p_value"] > 0.3
    with pytest.raises(ValueError):
        paired_bootstrap_test(a, b[:10])


def _report(correct: list, surfaces: list = None) -> dict:
    surfaces = surfaces or [f"m{i}" for i in range(len(correct))]
    return {
        "summary": {},
        "mentions": [
            {"mention": s, "gold_ids": ["A"], "candidates": [], "correct@1": bool(c), "rank": 1 if c else None}
            for s, c in zip(surfaces, correct)
        ],
    }


def test_compare_reports(tmp_path) -> None:
    pa, pb, pc = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    write_report(_report([1] * 40 + [0] * 10), pa)
    write_report(_report([1] * 20 + [0] * 30), pb)
    write_report(_report([1] * 5), pc)
    res = compare_reports(pa, pb, n=2000)
    assert res["acc_a"] == pytest.approx(0.8) and res["acc_b"] == pytest.approx(0.4)
    assert res["p_value"] < 0.01
    assert res["a_only_indices"] == list(range(20, 40)) and res["b_only_indices"] == []
    with pytest.raises(ValueError) as err:
        compare_reports(pa, pc)
    assert "a.json" in str(err.value) and "c.json" in str(err.value)
    write_report(_report([1] * 50, ["x"] * 50), pc)
    with pytest.warns(UserWarning):
        assert compare_reports(pa, pc, n=100)["surface_mismatches"] == 50


def test_plot_bins_writes_png(tmp_path) -> None:
    kb = make_kb()
    index = NameIndex(kb).fit()
    mentions = [
        Mention.bare("heart attack", ("D7",)),
        Mention.bare("hypertensive disease", ("D5",)),
        Mention.bare("t2d", ("D1",)),
        Mention.bare("cancer of the breast", ("D3",)),
    ]
    good = [[C("D7")], [C("D5")], [C("D1")], [C("D3")]]
    weak = [[C("D7")], [C("D1")], [C("D2")], [C("D3")]]
    reps = {
        "positive-only": evaluation_report(mentions, weak, name_index=index),
        "ANGEL": evaluation_report(mentions, good, name_index=index),
    }
    out = tmp_path / "bins.png"
    plot_bins(reps, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bins.png"]
    with pytest.raises(ValueError):
        plot_bins({"x": evaluation_report(mentions, good, kb=kb)}, tmp_path / "y.png")
