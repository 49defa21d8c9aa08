"""The offline HPO default (training.offline_default): split, patterns, training data, and a
tiny end-to-end build on a hand-written ontology (slow) that must be cached on the second run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_angel.kb import KnowledgeBase
from training import offline_default as od

TINY_OBO = """\
format-version: 1.2
ontology: hp

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000005
name: Mode of inheritance
is_a: HP:0000001 ! All

[Term]
id: HP:0000006
name: Autosomal dominant inheritance
synonym: "Autosomal dominant" EXACT []
is_a: HP:0000005 ! Mode of inheritance

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0001250
name: Seizure
def: "A seizure is an intermittent abnormality of nervous system physiology." []
synonym: "Seizures" EXACT []
synonym: "Epileptic seizure" EXACT []
synonym: "Fits" EXACT []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0004322
name: Short stature
synonym: "Short stature" EXACT []
synonym: "Decreased body height" EXACT []
synonym: "Small stature" EXACT []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000316
name: Hypertelorism
synonym: "Widely spaced eyes" EXACT []
synonym: "Increased interpupillary distance" EXACT []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001324
name: Muscle weakness
synonym: "Muscular weakness" EXACT []
synonym: "Weak muscles" EXACT []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001263
name: Global developmental delay
synonym: "Developmental delay" EXACT []
synonym: "Psychomotor retardation" EXACT []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000252
name: Microcephaly
synonym: "Small head" EXACT []
synonym: "Reduced head circumference" EXACT []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0009999
name: Obsolete thing
is_obsolete: true
"""


@pytest.fixture(scope="module")
def obo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hpo") / "hp.obo"
    path.write_text(TINY_OBO, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hpo_kb(obo) -> KnowledgeBase:
    return KnowledgeBase.from_files([obo], format="obo")


def test_split_holds_out_synonyms_that_stay_linkable(hpo_kb):
    split = od.split_synonyms(hpo_kb, n_dev=2, n_test=3, seed=1)
    held = split.dev + split.test
    assert len(split.dev) == 2 and len(split.test) == 3
    concepts = [m.gold_ids[0] for m in held]
    assert len(set(concepts)) == len(concepts)  # at most one name per concept
    for m in held:
        cid = m.gold_ids[0]
        assert m.surface in hpo_kb.names_for(cid)
        assert m.surface != hpo_kb.preferred_name(cid).lower()  # never the preferred name
        assert split.train_kb.name_index(m.surface) is None  # removed: cannot be copied
        assert split.train_kb.names_for(cid)  # the concept keeps other names
    assert split.train_kb.num_names == hpo_kb.num_names - len(held)
    assert split.train_kb.definition("HP:0001250") == hpo_kb.definition("HP:0001250")
    assert split.train_kb.preferred_name("HP:0004322") == "Short stature"
    # deterministic for a seed, different for another
    again = od.split_synonyms(hpo_kb, n_dev=2, n_test=3, seed=1)
    assert [m.surface for m in again.test] == [m.surface for m in split.test]
    with pytest.raises(ValueError, match="held-out-able"):
        od.split_synonyms(hpo_kb, n_dev=50, n_test=50)


def test_phenotype_subtree_and_ruler_patterns(obo, hpo_kb):
    keep = od.phenotype_terms(obo)
    assert "HP:0001250" in keep and "HP:0000118" in keep
    assert "HP:0000006" not in keep and "HP:0000001" not in keep
    patterns = od.ruler_patterns(hpo_kb, keep)
    texts = {p["pattern"] for p in patterns}
    assert {"seizures", "short stature", "hypertelorism", "muscle weakness"} <= texts
    assert "autosomal dominant" not in texts  # inheritance mode, not a phenotype
    assert "fits" in texts and all(len(t) >= 4 for t in texts)
    assert all(p["label"] == od.ENTITY_LABEL and p["id"] in keep for p in patterns)


def test_copy_examples_encode_like_bare_mentions(tmp_path, tiny_kb, tiny_model_dir):
    """The pre-formatted copy records give the same token ids as a bare mention of the name."""
    from spacy_angel.linker import AngelLinker
    from spacy_angel.types import Mention
    from training.examples import seq2seq_example
    from training.positive import read_pretraining_jsonl

    path = od.copy_examples_file(tiny_kb, tmp_path / "copy.jsonl")
    records = [rec for _, _, rec in read_pretraining_jsonl(path)]
    assert len(records) == tiny_kb.num_names
    linker = AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu")
    for rec in records[:6]:
        name = rec["target"]
        assert seq2seq_example(linker, (rec["source"], rec["prompt"]), name) == seq2seq_example(
            linker, Mention.bare(name, tiny_kb.ids_for(name)), name
        )


def test_tfidf_pairs_prefer_own_synonym_over_other_concepts(hpo_kb):
    from training.tfidf import NameIndex

    index = NameIndex(hpo_kb).fit()
    pairs = od.tfidf_pairs(hpo_kb, index, count=100, negatives=2, seed=0)
    assert pairs
    for p in pairs:
        cid = p.gold_ids[0]
        assert p.mention.surface in hpo_kb.names_for(cid)
        assert p.chosen in hpo_kb.names_for(cid) and p.chosen != p.mention.surface
        assert cid not in hpo_kb.ids_for(p.rejected)
    assert len(od.tfidf_pairs(hpo_kb, index, count=3, negatives=2, seed=0)) == 3


def test_steps_fit_the_budget():
    assert od.steps_for(minutes=1.0, sec_per_step=0.1, wanted=10_000, overhead=1.0) == 600
    assert od.steps_for(minutes=1.0, sec_per_step=0.1, wanted=50, overhead=1.0) == 50
    assert od.steps_for(minutes=0.0, sec_per_step=1.0, wanted=50) == 1


def test_recipe_fingerprint_tracks_every_setting():
    base = od.Recipe()
    assert base.fingerprint("a") == od.Recipe().fingerprint("a")
    assert base.fingerprint("a") != base.fingerprint("b")
    assert base.fingerprint("a") != od.Recipe(dpo_beta=0.2).fingerprint("a")


@pytest.mark.slow
def test_tiny_build_links_and_is_cached(tmp_path, obo, capsys):
    """The whole build on the tiny ontology (seconds-long budgets), then a cached second run."""
    recipe = od.Recipe(
        n_dev=2, n_test=2, d_model=32, layers=1, heads=2, ffn=64, vocab=300,
        positive_minutes=0.15, positive_epochs=30, positive_batch=8, dpo_minutes=0.05, dpo_pairs=16, dpo_batch=4,
        eval_batch=8,
    )
    build = od.Build(tmp_path / od.MODEL_NAME, recipe, obo)
    metrics = build.run()
    assert set(metrics["stage_seconds"]) == {"kb", "init", "positive", "eval_positive", "dpo", "eval_dpo", "pipeline"}
    for key in ("tfidf", "positive", "dpo"):
        assert 0.0 <= metrics[key]["test"]["acc1"] <= 1.0 and metrics[key]["test"]["n"] == 2
    assert metrics["model"] in ("positive", "dpo")
    assert json.loads((tmp_path / od.MODEL_NAME / od.METRICS_FILE).read_text())["model"] == metrics["model"]
    nlp = od.load_pipeline(tmp_path / od.MODEL_NAME / "pipeline")
    ents = od.describe(nlp("Seizures and short stature were seen."))
    assert [e["text"] for e in ents] == ["Seizures", "short stature"]
    kb_ids = set(KnowledgeBase.from_files([obo], format="obo").concept_ids)
    assert all(e["hpo_id"] in kb_ids and 0.0 < e["score"] <= 1.0 for e in ents)
    # second run: every stage comes from the cache
    again = od.Build(tmp_path / od.MODEL_NAME, recipe, obo)
    assert again.done
    # a changed recipe rebuilds from scratch
    changed = od.Build(tmp_path / od.MODEL_NAME, od.Recipe(**{**recipe.__dict__, "seed": 1}), obo)
    assert not changed.done and not (tmp_path / od.MODEL_NAME / "positive").exists()


def test_time_annealed_lr_decays_with_wall_time_not_steps():
    import torch

    callback = od.TimeAnnealedLR(minutes=1.0, warmup_steps=10, floor=0.05)
    assert callback.factor(0, 0.0) == pytest.approx(0.1)  # warm-up by steps
    assert callback.factor(500, 30.0) == pytest.approx(0.5)  # half the budget gone, whatever the step
    assert callback.factor(5, 30.0) == pytest.approx(0.3)
    assert callback.factor(500, 120.0) == pytest.approx(0.05)  # floor after the budget
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.4)

    class State:
        global_step = 20

    callback.on_train_begin(None, State, None, optimizer=optimizer)
    callback.started -= 15.0  # pretend 15 s of the 60 s budget have passed
    callback.on_step_begin(None, State, None, optimizer=optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.4 * 0.75, rel=1e-3)
