"""``scripts/document_switches.py`` scores every combination of the linker's document-level switches on
a gold DocBin and picks one; ``scripts/assemble.py --switches`` puts the pick into the pipeline's
config; ``scripts/copy_model.py`` copies a model without its hybrid extras. Issue 28: each switch is on
by default only where dev says so, with its dev figure."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import project_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXT = "Cystic fibrosis (CF) is inherited. Most CF patients have lung disease, and CF is common."



@pytest.fixture(scope="module")
def ruler_pipeline(tmp_path_factory, tiny_model_dir, tiny_kb_dir) -> Path:
    """A KB-phrase ruler in the NER's place, then ``angel_linker`` (untrained tiny model, hybrid)."""
    import spacy

    import spacy_angel.pipeline.linker_component  # noqa: F401

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "Disease", "pattern": "Cystic fibrosis"}, {"label": "Disease", "pattern": "CF"}])
    nlp.add_pipe("angel_linker", config={"num_beams": 3, "top_k": 3, "device": "cpu", "mode": "hybrid", "num_candidates": 4})
    nlp.get_pipe("angel_linker").initialize(model=str(tiny_model_dir), kb=tiny_kb_dir)
    path = tmp_path_factory.mktemp("switches") / "pipeline"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def gold_docbin(tmp_path_factory) -> Path:
    import spacy
    from spacy.tokens import DocBin

    doc = spacy.blank("en").make_doc(TEXT)
    doc.ents = [doc.char_span(m, m + len(s), label="Disease", kb_id="D003550")
                for s, m in (("Cystic fibrosis", 0), ("CF", 17), ("CF", TEXT.index("CF patients")), ("CF", TEXT.rindex("CF")))]
    path = tmp_path_factory.mktemp("gold") / "dev.spacy"
    DocBin(docs=[doc]).to_disk(path)
    return path


def test_every_combination_is_scored_and_propagation_links_the_short_forms(tmp_path, ruler_pipeline, gold_docbin):
    switches = project_script("document_switches")
    out = tmp_path / "switches.json"
    assert switches.main([str(ruler_pipeline), str(gold_docbin), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert len(rows) == 8 and len({tuple(sorted(r["switches"].items())) for r in rows}) == 8
    by = {tuple(r["switches"][k] for k in switches.SWITCHES): r for r in rows}
    # "CF" alone shares no 3-gram with any name: with propagation every CF span takes the long form's
    # concept, which its exact name gives; the 4 spans are then all right.
    assert by[(True, False, False)]["e2e"]["f1"] == 1.0
    assert by[(False, False, False)]["e2e"]["f1"] < 1.0
    # the best rows all have propagation on; of those, the one with nothing else on is chosen
    assert report["chosen"] == dict(zip(switches.SWITCHES, (True, False, False))) and report["documents"] == 1


def test_choose_takes_the_best_f1_then_the_fewest_switches():
    switches = project_script("document_switches")

    def row(f1, a, b, c):
        return {"switches": dict(zip(switches.SWITCHES, (a, b, c))), "e2e": {"f1": f1}}

    assert switches.choose([row(0.5, False, False, False), row(0.5, True, True, False), row(0.5, True, False, False)]) == \
        dict(zip(switches.SWITCHES, (False, False, False)))
    assert switches.choose([row(0.5, False, False, False), row(0.6, True, True, False), row(0.6, False, False, True)]) == \
        dict(zip(switches.SWITCHES, (False, False, True)))


def test_sweep_leaves_the_linker_settings_as_they_were(ruler_pipeline, gold_docbin):
    import spacy
    from spacy.tokens import DocBin

    switches = project_script("document_switches")
    nlp = spacy.load(ruler_pipeline)
    before = dict(nlp.get_pipe("angel_linker").cfg)
    switches.sweep(nlp, list(DocBin().from_disk(gold_docbin).get_docs(nlp.vocab)))
    assert nlp.get_pipe("angel_linker").cfg == before


def test_assemble_applies_the_chosen_switches_and_refuses_a_bad_file(tmp_path, tiny_model_dir, tiny_kb_dir):
    import spacy

    ner = spacy.blank("en")
    ner.add_pipe("ner")
    ner.initialize()
    ner.to_disk(tmp_path / "ner")
    assemble = project_script("assemble")
    chosen = {"abbreviation_propagation": True, "one_sense_per_document": False, "split_composite": True}
    (tmp_path / "switches.json").write_text(json.dumps({"chosen": chosen}))
    args = [str(tmp_path / "ner"), str(tiny_model_dir), str(tiny_kb_dir), "--output", str(tmp_path / "pipeline"),
            "--num-beams", "3", "--top-k", "3", "--device", "cpu", "--num-candidates", "4"]
    assert assemble.main([*args, "--switches", str(tmp_path / "switches.json")]) == 0
    cfg = spacy.load(tmp_path / "pipeline").get_pipe("angel_linker").cfg
    assert {k: cfg[k] for k in chosen} == chosen
    (tmp_path / "bad.json").write_text(json.dumps({"chosen": {"split_composite": "yes"}}))
    assert assemble.main([*args, "--switches", str(tmp_path / "bad.json")]) == 1
    assert assemble.main([*args, "--switches", str(tmp_path / "missing.json")]) == 1


def test_copy_model_leaves_out_the_hybrid_extras_and_the_source_alone(tmp_path, tiny_model_dir):
    import shutil

    copy_model = project_script("copy_model")
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    (src / "fusion.json").write_text("{}")
    (src / "name_encoder").mkdir()
    (src / "sub").mkdir()
    (src / "sub" / "fusion.json").write_text("{}")  # only the top level's extras are left out
    assert copy_model.main([str(src), str(tmp_path / "dst")]) == 0
    assert (tmp_path / "dst" / "config.json").is_file() and (tmp_path / "dst" / "sub" / "fusion.json").is_file()
    assert not (tmp_path / "dst" / "fusion.json").exists() and not (tmp_path / "dst" / "name_encoder").exists()
    assert (src / "fusion.json").exists() and (src / "name_encoder").is_dir()
    assert copy_model.main([str(tmp_path / "nope"), str(tmp_path / "dst2")]) == 1 and not (tmp_path / "dst2").exists()
    mine = tmp_path / "mine"  # a user's folder that is not a model: refused, left as it was
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert copy_model.main([str(src), str(mine)]) == 1 and (mine / "notes.txt").read_text() == "keep"
    assert not (mine / "config.json").exists()
    assert copy_model.main([str(src), str(tmp_path / "dst")]) == 0  # a model folder it replaces
