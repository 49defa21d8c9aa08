"""A pipeline saved by an earlier release loads and links as it did then.

``fixtures/pipeline_v0_1`` was written by ``nlp.to_disk`` with the code of commit 5b72409 (the last
flat-module layout): entity ruler, ``angel_abbreviations`` and ``angel_linker`` on the tiny KB with
an untrained tiny model. ``pipeline_v0_1_links.json`` holds what that code linked, in hybrid and
beam mode. Moving code between modules must not change a saved pipeline's meaning.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _links(nlp, texts):
    return [
        [[e.start_char, e.end_char, e.text, e.kb_id_, e._.kb_name, round(e._.cui_score, 5),
          [[c[0], c[1], round(c[2], 5)] for c in e._.candidates]] for e in doc.ents]
        for doc in nlp.pipe(texts)
    ]


@pytest.mark.parametrize("mode", ["hybrid", "beam"])
def test_a_pipeline_saved_before_the_move_links_identically(mode):
    expected = json.loads((FIXTURES / "pipeline_v0_1_links.json").read_text(encoding="utf-8"))
    nlp = spacy.load(FIXTURES / "pipeline_v0_1", config={"components": {"angel_linker": {"mode": mode}}})
    assert nlp.pipe_names == ["entity_ruler", "angel_abbreviations", "angel_linker"]
    got = _links(nlp, expected["texts"])
    assert got == expected[mode]
    assert sum(len(doc) for doc in got) == 7  # the ruler found the same spans, and every one was linked


def test_a_saved_pipeline_keeps_the_models_name_encoder(tiny_model_dir, tiny_kb_dir, tmp_path):
    """``nlp.to_disk`` writes ``angel_linker/name_encoder``; the loaded pipeline links with it alike."""
    import shutil

    import spacy

    from spacy_angel.retrieval.name_encoder import ENCODER_DIR
    from training.settings import NameEncoderSettings
    from training.stages.name_encoder import train_name_encoder
    from spacy_angel.kb.store import KnowledgeBase

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    encoder, _ = train_name_encoder(KnowledgeBase.from_disk(tiny_kb_dir), NameEncoderSettings(steps=10, batch_size=8, dim=16, progress=False))
    encoder.to_disk(model / ENCODER_DIR)
    nlp = spacy.blank("en")
    nlp.add_pipe("angel_linker", config={"model": str(model), "kb": str(tiny_kb_dir), "mode": "hybrid", "device": "cpu", "num_beams": 2, "top_k": 2})
    doc = nlp.make_doc("a case of mammary cancer")
    doc.ents = [doc.char_span(10, 24, label="DISEASE")]
    before = nlp.get_pipe("angel_linker")(doc).ents[0]._.candidates
    nlp.to_disk(tmp_path / "nlp")
    assert (tmp_path / "nlp" / "angel_linker" / ENCODER_DIR / "encoder.json").is_file()
    shutil.rmtree(model)  # the saved pipeline needs nothing outside its folder
    loaded = spacy.load(tmp_path / "nlp")
    assert loaded.get_pipe("angel_linker").linker.name_encoder is not None
    doc = loaded.make_doc("a case of mammary cancer")
    doc.ents = [doc.char_span(10, 24, label="DISEASE")]
    assert loaded.get_pipe("angel_linker")(doc).ents[0]._.candidates == before
    arrays = tmp_path / "nlp" / "angel_linker" / ENCODER_DIR / "encoder.safetensors"
    arrays.write_bytes(arrays.read_bytes()[:200])  # a broken encoder is named, never silently dropped
    with pytest.raises(ValueError, match=r"\[E456\] cannot use the name encoder in .*name_encoder.*train name-encoder"):
        spacy.load(tmp_path / "nlp")
