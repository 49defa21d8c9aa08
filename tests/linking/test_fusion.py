"""Hybrid fusion: fusion.json round trip, the pairwise fit, and the fused ranking itself."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spacy_angel.linking.fusion import (
    FEATURES,
    FUSION_FILE,
    ConceptEvidence,
    FusionWeights,
    NameEvidence,
    concept_evidence,
    fuse,
)
from spacy_angel.errors import FusionError

pytest.importorskip("sklearn")
from training.stages.fuse import FusionData, acc_at_1, fit_fusion  # noqa: E402


def test_fusion_json_round_trip(tmp_path):
    w = FusionWeights(model=1.5, tfidf=3.25, exact=0.5, beam=-0.25, source="fitted", dev={"hybrid_acc@1": 0.9})
    w.to_disk(tmp_path)
    assert (tmp_path / FUSION_FILE).is_file()
    back = FusionWeights.from_disk(tmp_path)
    assert back == w
    assert FusionWeights.for_model(tmp_path) == w
    assert FusionWeights.for_model(tmp_path / "nowhere") == FusionWeights()


@pytest.mark.parametrize(
    "content, fragment",
    [("{", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"model": "x"}', "'model' must be a number"),
     ('{"bm25": 1}', "unknown field"), ('{"tfidf": 1e999}', "finite")],
)
def test_fusion_json_errors_name_file_and_field(tmp_path, content, fragment):
    (tmp_path / FUSION_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(FusionError) as err:
        FusionWeights.from_disk(tmp_path)
    assert fragment in str(err.value) and FUSION_FILE in str(err.value)


def test_concept_evidence_takes_best_value_per_feature():
    ids = {0: ("C1",), 1: ("C1",), 2: ("C2",), 3: ()}
    ev = concept_evidence(
        [NameEvidence(0, -2.0, 0.9, False, None, 0.7), NameEvidence(1, -0.5, 0.1, True, 2, 0.2),
         NameEvidence(2, -1.0, 0.5, False, 0), NameEvidence(3, 0.0, 1.0, True, 0)],
        ids.__getitem__,
    )
    assert ev.kb_ids == [("C1",), ("C2",)]  # a name without ids never becomes a candidate
    assert ev.names == [1, 2]  # the concept's best-model name
    np.testing.assert_allclose(ev.features[0], [-0.5, 0.9, 1.0, 1 / 3, 0.7])
    np.testing.assert_allclose(ev.features[1], [-1.0, 0.5, 0.0, 1.0, 0.0])


def test_fuse_scores_are_log_probabilities_and_ids_are_deduplicated():
    ev = ConceptEvidence(
        kb_ids=[("A",), ("A", "B"), ("C",)],
        names=[0, 1, 2],
        features=np.array([[-0.1, 0.9, 1, 1, 0], [-0.2, 0.8, 0, 0.5, 0], [-3.0, 0.1, 0, 0, 0]], dtype=float),
    )
    out = fuse(ev, FusionWeights(), ["a", "ab", "c"], top_k=5)
    assert [c.kb_ids for c in out] == [("A",), ("B",), ("C",)]
    assert sum(np.exp([c.score for c in out])) == pytest.approx(1.0)
    assert out[0].score > out[1].score > out[2].score


def _toy(n: int, seed: int):
    """Gold = argmax(model + 3 * tfidf): neither feature alone finds it reliably."""
    rng = np.random.default_rng(seed)
    concepts, masks = [], []
    for i in range(n):
        k = 6
        feats = np.zeros((k, len(FEATURES)))
        feats[:, 0] = rng.normal(-1.0, 0.5, k)
        feats[:, 1] = rng.uniform(0, 1, k)
        gold = int(np.argmax(feats[:, 0] + 3 * feats[:, 1]))
        concepts.append(ConceptEvidence([(f"C{i}_{j}",) for j in range(k)], list(range(k)), feats))
        masks.append(np.arange(k) == gold)
    return FusionData(concepts, masks)


def test_fitted_weights_beat_either_feature_alone():
    train, test = _toy(300, 0), _toy(300, 1)
    fitted = fit_fusion(train)
    w = fitted["weights"].vector()
    model_only = np.array([1.0, 0, 0, 0, 0])
    tfidf_only = np.array([0, 1.0, 0, 0, 0])
    acc_fit, acc_model, acc_tfidf = acc_at_1(test, w), acc_at_1(test, model_only), acc_at_1(test, tfidf_only)
    assert acc_fit > max(acc_model, acc_tfidf) + 0.15, (acc_fit, acc_model, acc_tfidf)
    assert acc_fit > 0.9
    assert w[1] / w[0] == pytest.approx(3.0, rel=0.35)  # recovers the generating ratio


def test_fit_refuses_dev_without_usable_mentions():
    data = FusionData([ConceptEvidence([("A",)], [0], np.zeros((1, len(FEATURES))))] * 5, [np.array([True])] * 5)
    with pytest.raises(ValueError, match="no dev mention has its gold concept"):
        fit_fusion(data)


def test_fit_refuses_fewer_dev_mentions_than_folds():
    data = FusionData([ConceptEvidence([("A",)], [0], np.zeros((1, len(FEATURES))))], [np.array([True])])
    with pytest.raises(ValueError, match=r"\[E112\] cannot fit fusion weights on 1 dev mention"):
        fit_fusion(data)


def test_fusion_file_is_plain_json(tmp_path):
    FusionWeights(tfidf=2.0).to_disk(tmp_path)
    data = json.loads((tmp_path / FUSION_FILE).read_text())
    assert set(FEATURES) <= set(data)


def test_a_fit_no_better_than_tfidf_alone_on_dev_ships_tfidf_alone():
    """Where the model's features carry nothing (names it never saw), the weights are TF-IDF's alone,
    not a fit that ranks worse on dev; where they help (the test above), the fit is kept."""
    rng = np.random.default_rng(0)
    concepts, masks = [], []
    for i in range(200):
        feats = np.zeros((6, len(FEATURES)))
        feats[:, 0] = rng.normal(-1.0, 0.5, 6)  # noise
        feats[:, 1] = rng.uniform(0, 1, 6)
        feats[:, 3] = rng.uniform(0, 1, 6)  # noise
        concepts.append(ConceptEvidence([(f"C{i}_{j}",) for j in range(6)], list(range(6)), feats))
        masks.append(np.arange(6) == int(np.argmax(feats[:, 1])))
    fitted = fit_fusion(FusionData(concepts, masks))
    assert fitted["weights"].source == "tfidf-only" and fitted["C"] is None
    assert list(fitted["weights"].vector()) == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert fitted["tfidf_only_acc@1"] == 1.0 >= max(fitted["cv_acc@1"].values())
    assert fit_fusion(_toy(300, 0))["weights"].source == "fitted"


def test_a_dense_cosine_that_finds_the_gold_is_weighted_by_the_fit():
    """Held-out synonyms: the dense encoder's cosine knows the concept where TF-IDF does not."""
    rng = np.random.default_rng(1)
    concepts, masks = [], []
    for i in range(200):
        feats = np.zeros((6, len(FEATURES)))
        feats[:, 0] = rng.normal(-1.0, 0.5, 6)
        feats[:, 1] = rng.uniform(0, 1, 6)
        feats[:, 4] = rng.uniform(0, 1, 6)
        concepts.append(ConceptEvidence([(f"C{i}_{j}",) for j in range(6)], list(range(6)), feats))
        masks.append(np.arange(6) == int(np.argmax(feats[:, 4] + 0.3 * feats[:, 1])))
    fitted = fit_fusion(FusionData(concepts, masks))
    w = fitted["weights"]
    assert w.source == "fitted" and w.dense > 2 * abs(w.tfidf) > 0 and fitted["fit_acc@1"] > fitted["tfidf_only_acc@1"] + 0.3
