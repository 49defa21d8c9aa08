"""``angel_linker`` follows spaCy's conventions: ``kb_id_`` / NIL like EntityLinker, ``score`` with
``Scorer.score_links`` (so ``spacy evaluate`` prints NEL P/R/F), numbered config errors, and
``initialize(model=, kb=)`` for configs without machine paths."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example

from spacy_angel.types import NIL
from spacy_angel.pipeline.linker_component import AngelLinkerComponent

PATTERNS = [{"label": "DISEASE", "pattern": p} for p in ["breast cancer", "migraine", "heart attack", "cystic fibrosis"]]
TEXTS = ["Women with breast cancer and migraine.", "A heart attack; cystic fibrosis is rare.", "Nothing here."]
SCRIPTS = Path(__file__).resolve().parents[2] / "projects" / "angel" / "scripts"


def make_nlp(model_dir, kb_dir, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"}).add_patterns(PATTERNS)
    nlp.add_pipe("angel_linker", config={"model": str(model_dir), "kb": str(kb_dir), "device": "cpu", **config})
    return nlp


@pytest.fixture(scope="module")
def nlp(tiny_model_dir, tiny_kb_dir):
    return make_nlp(tiny_model_dir, tiny_kb_dir)


def gold_doc(nlp, text: str, ids) -> Doc:
    """A reference doc with the ruler's entity spans and the given gold ids."""
    ref = nlp.make_doc(text)
    predicted = nlp.get_pipe("entity_ruler")(nlp.make_doc(text))
    ref.ents = [Span(ref, e.start, e.end, label=e.label_, kb_id=kb_id) for e, kb_id in zip(predicted.ents, ids)]
    return ref


# ---------------------------------------------------------------------------- kb_id_
def test_kb_id_is_set_on_entities_and_survives_serialisation(nlp):
    docs = list(nlp.pipe(TEXTS))
    ents = [e for d in docs for e in d.ents]
    assert len(ents) == 4
    for ent in ents:
        assert ent.kb_id_ == ent._.cui and ent.kb_id_  # the top concept, on every token of the span
        assert all(t.ent_kb_id_ == ent.kb_id_ for t in ent)
    back = Doc(nlp.vocab).from_bytes(docs[0].to_bytes())
    assert [e.kb_id_ for e in back.ents] == [e.kb_id_ for e in docs[0].ents]


def test_below_threshold_kb_id_is_nil_like_spacys_entity_linker(tiny_model_dir, tiny_kb_dir):
    from spacy.pipeline.entity_linker import EntityLinker

    assert NIL == EntityLinker.NIL
    doc = make_nlp(tiny_model_dir, tiny_kb_dir, threshold=1.0)(TEXTS[0])
    assert doc.ents and all(e.kb_id_ == NIL and e._.cui is None and e._.kb_ents for e in doc.ents)


def test_spans_key_sets_kb_id_in_the_span_group(tiny_model_dir, tiny_kb_dir, tiny_kb):
    nlp = spacy.blank("en")
    nlp.add_pipe("angel_linker", config={"model": str(tiny_model_dir), "kb": str(tiny_kb_dir), "spans_key": "sc", "device": "cpu"})
    doc = nlp.make_doc("breast cancer and migraine")
    doc.spans["sc"] = [Span(doc, 0, 2, label="D"), Span(doc, 0, 1, label="D"), Span(doc, 3, 4, label="D")]  # overlaps allowed
    doc = nlp(doc)
    group = doc.spans["sc"]
    assert [(s.start, s.end, s.label_) for s in group] == [(0, 2, "D"), (0, 1, "D"), (3, 4, "D")]
    assert all(s.kb_id_ in tiny_kb.concept_ids and s.kb_id_ == s._.cui for s in group)
    assert doc.ents == ()  # doc.ents untouched


# ---------------------------------------------------------------------------- score
def test_score_is_spacys_score_links(nlp):
    docs = list(nlp.pipe(TEXTS))
    predicted = [[e.kb_id_ for e in d.ents] for d in docs]
    # gold: first entity right, second wrong, third NIL in gold, fourth right
    gold_ids = [[predicted[0][0], "D_WRONG"], [NIL, predicted[1][1]], []]
    examples = [Example(doc, gold_doc(nlp, text, ids)) for doc, text, ids in zip(docs, TEXTS, gold_ids)]
    scores = nlp.get_pipe("angel_linker").score(examples)
    # tp 2; the wrong id: fp + fn; a gold NIL with a prediction: fp
    assert scores["nel_micro_p"] == pytest.approx(2 / 4)
    assert scores["nel_micro_r"] == pytest.approx(2 / 3)
    assert scores["nel_micro_f"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # nlp.evaluate runs the pipeline on the texts and reports the same through the component
    evaluated = nlp.evaluate([Example(nlp.make_doc(t), gold_doc(nlp, t, ids)) for t, ids in zip(TEXTS, gold_ids)])
    assert evaluated["nel_micro_f"] == pytest.approx(scores["nel_micro_f"])


def test_score_with_spans_key_reads_the_span_groups(tiny_model_dir, tiny_kb_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe("angel_linker", config={"model": str(tiny_model_dir), "kb": str(tiny_kb_dir), "spans_key": "sc", "device": "cpu"})
    doc = nlp.make_doc("breast cancer and migraine")
    doc.spans["sc"] = [doc[0:2], doc[3:4]]
    doc = nlp(doc)
    ref = nlp.make_doc(doc.text)
    ref.spans["sc"] = [Span(ref, 0, 2, label="D", kb_id=doc.spans["sc"][0].kb_id_), Span(ref, 3, 4, label="D", kb_id="D_WRONG")]
    scores = nlp.get_pipe("angel_linker").score([Example(doc, ref)])
    assert scores["nel_micro_p"] == pytest.approx(0.5) and scores["nel_micro_r"] == pytest.approx(0.5)


def test_spacy_evaluate_reports_nel_scores(nlp, tmp_path):
    """``spacy evaluate`` (3.8) runs the component's ``score``; its printed table has no NEL rows,
    the ``--output`` JSON holds ``nel_micro_p/r/f``."""
    docs = list(nlp.pipe(TEXTS))
    gold = [gold_doc(nlp, t, [e.kb_id_ for e in d.ents]) for t, d in zip(TEXTS, docs)]
    DocBin(docs=gold).to_disk(tmp_path / "dev.spacy")
    nlp.to_disk(tmp_path / "pipeline")
    out = subprocess.run(
        [sys.executable, "-m", "spacy", "evaluate", str(tmp_path / "pipeline"), str(tmp_path / "dev.spacy"),
         "--output", str(tmp_path / "scores.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    import json

    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["nel_micro_p"] == scores["nel_micro_r"] == scores["nel_micro_f"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- e2e script agrees
def test_e2e_script_nel_agrees_with_its_own_count(nlp, tmp_path, tiny_kb):
    """On single-id gold, spaCy's recall (through the component's score) is the script's
    linking_on_found accuracy, and its true positives are the script's e2e true positives."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import e2e_score
    finally:
        sys.path.remove(str(SCRIPTS))
    docs = list(nlp.pipe(TEXTS))
    first, second = [[e.kb_id_ for e in d.ents] for d in docs[:2]]
    wrong = next(c for c in tiny_kb.concept_ids if c not in first + second)
    gold = [gold_doc(nlp, TEXTS[0], [first[0], wrong]), gold_doc(nlp, TEXTS[1], [f"MESH:{second[0]}", wrong]),
            gold_doc(nlp, TEXTS[2], [])]
    gold[2].ents = [Span(gold[2], 0, 1, label="DISEASE", kb_id=wrong)]  # a gold entity the NER misses
    DocBin(docs=gold).to_disk(tmp_path / "gold.spacy")
    nlp.to_disk(tmp_path / "pipeline")
    assert e2e_score.main([str(tmp_path / "pipeline"), str(tmp_path / "gold.spacy"), "--output", str(tmp_path / "m.json")]) == 0
    import json

    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["linking_on_found"] == {"accuracy": 0.5, "n": 4}
    assert metrics["nel"]["nel_micro_r"] == metrics["linking_on_found"]["accuracy"]
    assert metrics["e2e"]["tp"] == 2 and metrics["nel"]["nel_micro_p"] == 0.5  # no NIL predictions: p == r
    direct = nlp.get_pipe("angel_linker").score([Example(d, g) for d, g in zip(list(nlp.pipe(TEXTS)), gold)])
    assert direct["nel_micro_r"] == pytest.approx(1 / 4)  # raw strings: "MESH:D..." != "D...", the script normalises


# ---------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    "field,value",
    [("num_beams", 0), ("top_k", 0), ("context_window", -1), ("batch_size", 0), ("threshold", 1.5),
     ("threshold", -0.1), ("dtype", "float8"), ("device", "gpu"), ("device", "cuda:x")],
)
def test_config_range_errors_are_numbered_and_name_the_field(field, value):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=rf"\[E100\] angel_linker: config setting '{field}' must be"):
        nlp.add_pipe("angel_linker", config={field: value})


def test_config_type_errors_come_from_spacys_registry():
    from thinc.api import ConfigValidationError

    nlp = spacy.blank("en")
    with pytest.raises(ConfigValidationError, match="num_beams"):
        nlp.add_pipe("angel_linker", config={"num_beams": "five"})
    with pytest.raises(ValueError, match=r"\[E101\].*top_k"):
        AngelLinkerComponent(nlp.vocab, top_k=10, num_beams=5)
    for ok in ({"dtype": "bfloat16"}, {"device": "cuda:1"}, {"context_window": 0}, {"threshold": 1}):
        spacy.blank("en").add_pipe("angel_linker", config=ok)


def test_missing_model_error_is_numbered():
    nlp = spacy.blank("en")
    nlp.add_pipe("angel_linker")
    with pytest.raises(ValueError, match=r"\[E102\] angel_linker has no model"):
        nlp("breast cancer")


# ---------------------------------------------------------------------------- initialize
def test_initialize_loads_model_and_kb_without_paths_in_the_config(tiny_model_dir, tiny_kb_dir, tmp_path, nlp):
    plain = spacy.blank("en")
    plain.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"}).add_patterns(PATTERNS)
    plain.add_pipe("angel_linker", config={"device": "cpu"}).initialize(model=tiny_model_dir, kb=tiny_kb_dir)
    assert plain.config["components"]["angel_linker"]["model"] is None
    expected = [[(e.text, e.kb_id_) for e in d.ents] for d in nlp.pipe(TEXTS)]
    assert [[(e.text, e.kb_id_) for e in d.ents] for d in plain.pipe(TEXTS)] == expected
    plain.to_disk(tmp_path / "p")
    cfg = (tmp_path / "p" / "config.cfg").read_text()
    assert str(tiny_model_dir) not in cfg and str(tiny_kb_dir) not in cfg
    assert [[(e.text, e.kb_id_) for e in d.ents] for d in spacy.load(tmp_path / "p").pipe(TEXTS)] == expected


def test_nlp_initialize_reads_an_initialize_block_and_keeps_a_loaded_linker(tiny_model_dir, tiny_kb_dir, tiny_kb):
    nlp = spacy.blank("en")
    nlp.add_pipe("angel_linker", config={"device": "cpu"})
    nlp.config["initialize"]["components"]["angel_linker"] = {"model": str(tiny_model_dir), "kb": str(tiny_kb_dir)}
    nlp.initialize()  # spaCy validates the block against initialize()'s signature, then calls it
    linker = nlp.get_pipe("angel_linker")
    loaded = linker.linker
    assert loaded.kb.fingerprint() == tiny_kb.fingerprint()
    nlp.config["initialize"]["components"]["angel_linker"] = {}
    nlp.initialize()
    assert linker.linker is loaded  # nothing new to load: kept
