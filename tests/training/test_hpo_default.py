"""The offline HPO default (training.hpo_default): split, patterns, training data, the recipe,
and the main job end to end on a hand-written ontology with tiny step budgets (seconds)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from spacy_angel.kb.readers import load_files
from spacy_angel.seq2seq import offline_init as modeling
from spacy_angel.kb.store import KnowledgeBase
from training.data import synonym_split
from training.examples import kb_name_examples
from training.hpo_default import data as hd
from training.hpo_default import main as hm
from training.stages import kb_linker as hb
from training.stages.kb_linker_recipe import Recipe

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
    return load_files([obo], format="obo")


def test_split_holds_out_synonyms_that_stay_linkable(hpo_kb):
    split = synonym_split.split_synonyms(hpo_kb, n_dev=2, n_test=3, seed=1)
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
    again = synonym_split.split_synonyms(hpo_kb, n_dev=2, n_test=3, seed=1)
    assert [m.surface for m in again.test] == [m.surface for m in split.test]
    with pytest.raises(ValueError, match="held-out-able"):
        synonym_split.split_synonyms(hpo_kb, n_dev=50, n_test=50)


def test_phenotype_subtree_and_ruler_patterns(obo, hpo_kb):
    keep = hd.phenotype_terms(obo)
    assert "HP:0001250" in keep and "HP:0000118" in keep
    assert "HP:0000006" not in keep and "HP:0000001" not in keep
    patterns = hb.ruler_patterns(hpo_kb, keep, hd.ENTITY_LABEL)
    texts = {p["pattern"] for p in patterns}
    assert {"seizures", "short stature", "hypertelorism", "muscle weakness"} <= texts
    assert "autosomal dominant" not in texts  # inheritance mode, not a phenotype
    assert "fits" in texts and all(len(t) >= 4 for t in texts)
    assert all(p["label"] == hd.ENTITY_LABEL and p["id"] in keep for p in patterns)


def test_copy_examples_encode_like_bare_mentions(tmp_path, tiny_kb, tiny_model_dir):
    """The pre-formatted copy records give the same token ids as a bare mention of the name."""
    from spacy_angel.linking.linker import AngelLinker
    from spacy_angel.types import Mention
    from training.examples.encoding import seq2seq_example
    from training.stages.positive import read_pretraining_jsonl

    linker = AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu")
    path = kb_name_examples.copy_examples_file(tiny_kb, tmp_path / "copy.jsonl", linker.tokenizer)
    records = [rec for _, _, rec in read_pretraining_jsonl(path)]
    assert len(records) == tiny_kb.num_names
    assert records[0]["source"] == f"START {records[0]['target']} END" and records[0]["prompt"].endswith(" is")
    for rec in records[:6]:
        name = rec["target"]
        assert seq2seq_example(linker, (rec["source"], rec["prompt"]), name) == seq2seq_example(
            linker, Mention.bare(name, tiny_kb.ids_for(name)), name
        )


def test_tfidf_pairs_prefer_own_synonym_over_other_concepts(hpo_kb):
    from spacy_angel.retrieval.tfidf import NameIndex

    index = NameIndex(hpo_kb).fit()
    pairs = kb_name_examples.tfidf_pairs(hpo_kb, index, count=100, negatives=2, seed=0)
    assert pairs
    for p in pairs:
        cid = p.gold_ids[0]
        assert p.mention.surface in hpo_kb.names_for(cid)
        assert p.chosen in hpo_kb.names_for(cid) and p.chosen != p.mention.surface
        assert cid not in hpo_kb.ids_for(p.rejected)
    assert len(kb_name_examples.tfidf_pairs(hpo_kb, index, count=3, negatives=2, seed=0)) == 3


def test_recipe_is_steps_and_seed_not_wall_time():
    base = Recipe()
    assert base.fingerprint("a") == Recipe().fingerprint("a")
    assert base.fingerprint("a") != base.fingerprint("b")
    assert base.fingerprint("a") != Recipe(dpo_beta=0.2).fingerprint("a")
    pos, dpo = base.positive(Path("copy.jsonl")), base.preference()
    assert (pos.max_steps, pos.warmup_steps, pos.seed, pos.device) == (base.positive_steps, base.warmup_steps, 0, "cpu")
    assert (dpo.max_steps, dpo.seed, dpo.device, dpo.loss) == (base.dpo_steps, 0, "cpu", "dpo")
    assert base.dpo_pairs == base.dpo_steps * base.dpo_batch  # one epoch over the pairs
    assert pos.max_minutes and dpo.max_minutes  # safety caps only, never the budget
    names = {f.name for f in dataclasses.fields(Recipe)}
    assert not any("second" in n for n in names)


TINY = Recipe(
    n_dev=5, n_test=2, d_model=32, layers=1, heads=2, ffn=64, vocab=300, positive_steps=30, positive_batch=8,
    warmup_steps=3, dpo_steps=2, dpo_batch=4, eval_batch=8, encoder_steps=20,
)


def test_main_job_builds_reports_links_and_caches(tmp_path, obo, capsys):
    """``main()`` end to end on the tiny ontology: metrics file, printed report, the sample linked;
    a second run only loads; a changed recipe (the thread count too) rebuilds."""
    import torch

    sizes = json.dumps(modeling.SIZES, sort_keys=True)
    threads_before = torch.get_num_threads()
    assert hm.main(["--cache-dir", str(tmp_path), "--obo", str(obo), "--threads", "1"], recipe=TINY) == 0
    assert torch.get_num_threads() == threads_before  # the build pinned its own count and gave it back
    out = capsys.readouterr()
    root = tmp_path / hm.MODEL_NAME
    metrics = json.loads((root / hb.METRICS_FILE).read_text())
    assert metrics["torch_threads"] == 1 and metrics["recipe"]["threads"] == 1
    assert set(metrics["stage_seconds"]) == set(hb.STAGES)
    assert metrics["steps"] == {"positive": 30, "dpo": 2, "encoder": 20} and metrics["cut_by_safety_cap"] == {}
    for key in ("tfidf", "positive", "dpo", "dense", "hybrid"):
        assert 0.0 <= metrics[key]["test"]["acc1"] <= 1.0 and metrics[key]["test"]["n"] == 2
    assert metrics["model"] in ("positive", "dpo") and metrics["hybrid"]["model"] == metrics["model"]
    assert (root / metrics["model"] / "fusion.json").is_file()  # the hybrid weights the pipeline links with
    assert (root / metrics["model"] / "name_encoder" / "encoder.json").is_file()  # and the dense name encoder
    assert f"after DPO {metrics['dpo']['test']['acc1']:.3f}, dense name encoder {metrics['dense']['test']['acc1']:.3f}" in out.out and "30 + 2 steps" in out.out
    kb_ids = set(load_files([obo], format="obo").concept_ids)
    lines = [line.split() for line in out.out.splitlines() if line.startswith("  '")]
    assert [line[0] for line in lines] == ["'seizures'", "'short", "'hypertelorism'", "'muscle"]
    assert all(any(tok in kb_ids for tok in line) for line in lines)  # each sample entity linked
    assert json.dumps(modeling.SIZES, sort_keys=True) == sizes  # the recipe's dims went in explicitly

    # second run: cached (no stage runs), JSON output
    argv = ["--cache-dir", str(tmp_path), "--obo", str(obo), "--threads", "1", "--json", "--text", "Short stature."]
    assert hm.main(argv, recipe=TINY) == 0
    again = capsys.readouterr()
    assert "stage" not in again.err
    record = json.loads(again.out.strip().splitlines()[-1])
    assert [e["text"] for e in record["entities"]] == ["Short stature"]
    assert record["entities"][0]["hpo_id"] in kb_ids and 0.0 < record["entities"][0]["score"] <= 1.0

    # a changed recipe rebuilds from scratch; so does another thread count (other float sums)
    assert not hm.hpo_build(root, TINY, obo).done  # TINY's own count is 2, the build above ran at 1
    changed = hm.hpo_build(root, dataclasses.replace(TINY, seed=1), obo)
    assert not changed.done and not (root / "positive").exists()
