"""The ``angel_linker`` spaCy component: registration, annotations, NIL threshold, serialization."""
from __future__ import annotations

import pytest
import spacy

from spacy_angel.kb.readers import load_kb
from spacy_angel.pipeline.linker_component import AngelLinkerComponent


PATTERNS = [
    {"label": "DISEASE", "pattern": p}
    for p in ["breast cancer", "high blood pressure", "migraine", "cystic fibrosis", "heart attack", "Huntington disease"]
]
TEXTS = [
    "Women with breast cancer and high blood pressure were followed for ten years.",
    "Migraine is common; cystic fibrosis is rare. A heart attack is an emergency.",
    "No disease is mentioned here.",
    "",
    "Huntington disease (Chorea Huntington) — ärztliche Betreuung für Patienten mit migraine.",
]


def make_nlp(model_dir, kb_dir, **config):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns(PATTERNS)
    nlp.add_pipe("angel_linker", config={"model": str(model_dir), "kb": str(kb_dir), "device": "cpu", **config})
    return nlp


def annotations(docs):
    return [
        [(e.text, e._.cui, e._.kb_name, round(e._.cui_score, 5), [(c[0], c[1], round(c[2], 5)) for c in e._.candidates]) for e in doc.ents]
        for doc in docs
    ]


@pytest.fixture(scope="module")
def nlp(tiny_model_dir, tiny_kb_dir):
    return make_nlp(tiny_model_dir, tiny_kb_dir)


def test_factories_work_after_install_without_importing_the_package():
    """The spacy_factories entry points let a fresh interpreter add both components by name."""
    import subprocess
    import sys

    code = (
        "import spacy; nlp = spacy.blank('en'); nlp.add_pipe('angel_abbreviations'); nlp.add_pipe('angel_linker');"
        "import sys; print(','.join(nlp.pipe_names), 'training' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["angel_abbreviations,angel_linker", "False"]  # and the runtime never imports training


def test_every_entity_gets_a_kb_concept_with_sorted_candidates(nlp, tiny_kb):
    docs = list(nlp.pipe(TEXTS))
    ents = [e for doc in docs for e in doc.ents]
    assert len(ents) == 7
    for ent in ents:
        assert ent._.cui in tiny_kb.concept_ids
        assert ent._.kb_name in tiny_kb.names_for(ent._.cui)
        scores = [score for _, _, score in ent._.candidates]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 < s <= 1.0 for s in scores)
        assert ent._.cui_score == scores[0]
        assert ent._.kb_ents == [(cid, score) for cid, _, score in ent._.candidates]
        assert len(ent._.candidates) <= 5
    assert docs[2].ents == () and docs[3].ents == ()


def test_pipe_equals_call(nlp):
    """Batched ``nlp.pipe`` and one doc at a time agree, each decoded afresh: answered from the
    linker's cache, the second run would equal the first whatever batching did."""
    linker = nlp.get_pipe("angel_linker").linker
    linker.clear_cache()
    piped = annotations(nlp.pipe(TEXTS, batch_size=2))
    assert linker.cached > 0
    linker.clear_cache()
    assert linker.cached == 0, "the second run must not find the first run's results"
    assert annotations([nlp(t) for t in TEXTS]) == piped


def test_threshold_marks_low_scores_as_nil(tiny_model_dir, tiny_kb_dir):
    strict = make_nlp(tiny_model_dir, tiny_kb_dir, threshold=1.0)
    doc = strict(TEXTS[0])
    assert doc.ents
    for ent in doc.ents:
        assert ent._.cui is None and ent._.kb_name is None
        assert ent._.candidates, "candidates are kept for NIL spans"


def test_spans_key_links_a_span_group(tiny_model_dir, tiny_kb_dir, tiny_kb):
    nlp = spacy.blank("en")
    nlp.add_pipe("angel_linker", config={"model": str(tiny_model_dir), "kb": str(tiny_kb_dir), "spans_key": "sc", "device": "cpu"})
    doc = nlp.make_doc("breast cancer and migraine")
    doc.spans["sc"] = [doc[0:2], doc[3:4]]
    doc = nlp(doc)
    assert all(span._.cui in tiny_kb.concept_ids for span in doc.spans["sc"])
    assert nlp("no span group here").spans.get("sc") is None


def test_to_disk_and_spacy_load_give_identical_results(tmp_path, nlp):
    before = annotations(nlp.pipe(TEXTS))
    nlp.to_disk(tmp_path / "pipeline")
    assert (tmp_path / "pipeline" / "angel_linker" / "model" / "model.safetensors").exists()
    ours = tmp_path / "pipeline" / "angel_linker"
    assert not list(ours.rglob("*.pkl")) and not list(ours.rglob("*.bin"))  # safetensors / JSON / npy only
    reloaded = spacy.load(tmp_path / "pipeline")
    assert annotations(reloaded.pipe(TEXTS)) == before


def test_missing_model_or_kb_config_is_a_clear_error():
    nlp = spacy.blank("en")
    nlp.add_pipe("angel_linker")
    with pytest.raises(ValueError, match="no model"):
        nlp("breast cancer")
    with pytest.raises(ValueError, match="top_k"):
        AngelLinkerComponent(nlp.vocab, top_k=10, num_beams=5)


def test_medic_kb_with_untrained_model(tmp_path, shared_data):
    """Issue 2's acceptance check on the real MEDIC KB: the constraint holds for an untrained model."""
    from spacy_angel.seq2seq.offline_init import init_model

    kb = load_kb(shared_data.need("medic/CTD_diseases_2017.tsv.gz"))
    kb.to_disk(tmp_path / "kb")
    init_model(kb, tmp_path / "model", size="tiny")
    nlp = make_nlp(tmp_path / "model", tmp_path / "kb")
    docs = list(nlp.pipe(TEXTS))
    ents = [e for d in docs for e in d.ents]
    assert len(ents) == 7
    for ent in ents:
        assert ent._.cui in kb.concept_ids
        assert ent._.kb_name.lower() in kb.names_for(ent._.cui)  # the preferred name, in its original case
        scores = [s for _, _, s in ent._.candidates]
        assert scores == sorted(scores, reverse=True)
    before = annotations(docs)
    nlp.to_disk(tmp_path / "pipeline")
    assert annotations(spacy.load(tmp_path / "pipeline").pipe(TEXTS)) == before


def test_abbreviations_are_linked_as_their_long_form(tiny_model_dir, tiny_kb_dir):
    """After angel_abbreviations, 'DMD' is linked as 'duchenne muscular dystrophy' in place."""
    text = "Duchenne muscular dystrophy (DMD) is common. Boys with DMD lose walking."
    seen = []

    def run(expand):
        nlp = spacy.blank("en")
        ruler = nlp.add_pipe("entity_ruler")
        ruler.add_patterns([{"label": "DISEASE", "pattern": "DMD"}])
        nlp.add_pipe("angel_abbreviations")
        linker = nlp.add_pipe(
            "angel_linker",
            config={"model": str(tiny_model_dir), "kb": str(tiny_kb_dir), "device": "cpu", "expand_abbreviations": expand},
        )
        original = linker.linker.link
        linker.linker.link = lambda mentions, **kw: (seen.append(list(mentions)), original(mentions, **kw))[1]
        doc = nlp(text)
        assert all(ent._.cui is not None for ent in doc.ents)
        return seen[-1]

    expanded = run(True)
    assert [m.surface for m in expanded] == ["Duchenne muscular dystrophy"] * 2
    second = expanded[1]
    assert second.text[: second.start].endswith("Boys with ") and second.text[second.end :].startswith(" lose walking")
    assert [m.surface for m in run(False)] == ["DMD", "DMD"]
