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
