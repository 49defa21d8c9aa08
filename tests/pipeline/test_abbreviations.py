"""Schwartz–Hearst abbreviation detection, mention expansion and the spaCy component."""
from __future__ import annotations

import pytest

from spacy_angel.pipeline.abbreviations import expand_abbreviations, expand_mention, find_abbreviations

DMD_TEXT = "Duchenne muscular dystrophy (DMD) is a severe disease. Boys with DMD lose ambulation."


def test_long_form_then_short_form() -> None:
    defs = find_abbreviations(DMD_TEXT)
    assert defs == [("DMD", "Duchenne muscular dystrophy", DMD_TEXT.index("DMD"), 0)]
    sf, lf, sf_start, lf_start = defs[0]
    assert DMD_TEXT[sf_start : sf_start + len(sf)] == sf
    assert DMD_TEXT[lf_start : lf_start + len(lf)] == lf


def test_expand_dmd_mention() -> None:
    abbrs = expand_abbreviations(DMD_TEXT)
    assert expand_mention("DMD", abbrs).lower() == "duchenne muscular dystrophy"


def test_apc_long_form_starts_at_word() -> None:
    text = "Germline mutations in the adenomatous polyposis coli (APC) gene cause polyposis."
    assert expand_abbreviations(text) == {"APC": "adenomatous polyposis coli"}


def test_short_form_then_long_form() -> None:
    text = "The APC (adenomatous polyposis coli) gene is mutated."
    (sf, lf, sf_start, lf_start), = find_abbreviations(text)
    assert (sf, lf) == ("APC", "adenomatous polyposis coli")
    assert text[sf_start : sf_start + 3] == "APC"
    assert text[lf_start : lf_start + len(lf)] == lf


def test_short_form_before_semicolon() -> None:
    text = "hereditary nonpolyposis colorectal cancer (HNPCC; Lynch syndrome) is common"
    assert expand_abbreviations(text) == {"HNPCC": "hereditary nonpolyposis colorectal cancer"}


def test_hyphenated_short_form() -> None:
    assert expand_abbreviations("ataxia-telangiectasia (A-T) patients") == {"A-T": "ataxia-telangiectasia"}


def test_long_form_stays_in_sentence() -> None:
    # "D" and "M" exist in the previous sentence, but the long form may not cross the full stop.
    text = "Data were Missing. The (DM) group was small."
    assert find_abbreviations(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "The results are shown (see above) and discussed.",
        "The difference was significant (p < 0.05) in all groups.",
        "Patients (n = 12) were enrolled (P=0.01).",
        "as described previously (1990) and in (Fig. 2).",
        "the mutant protein (mutant) was unstable",
        "an unmatched ( parenthesis",
    ],
)
def test_no_false_definitions(text: str) -> None:
    assert find_abbreviations(text) == []


def test_expand_mention_whole_words_only() -> None:
    abbrs = {"DM": "diabetes mellitus", "CT": "copper toxicosis"}
    assert expand_mention("type 1 DM", abbrs) == "type 1 diabetes mellitus"
    assert expand_mention("DMD", abbrs) == "DMD"  # not a whole-word match
    assert expand_mention("CT and DM", abbrs) == "copper toxicosis and diabetes mellitus"
    assert expand_mention("ct", abbrs) == "ct"  # case-sensitive
    assert expand_mention("DM", {}) == "DM"


def test_expand_mention_with_definition_inside() -> None:
    abbrs = {"UPD": "uniparental disomy"}
    assert expand_mention("maternal uniparental disomy (UPD) of 15", abbrs) == "maternal uniparental disomy of 15"


def test_longest_short_form_first() -> None:
    abbrs = {"A": "alpha thing", "A-T": "ataxia-telangiectasia"}
    assert expand_mention("A-T", abbrs) == "ataxia-telangiectasia"


# --------------------------------------------------------------------------- spaCy component
spacy = pytest.importorskip("spacy")


def _nlp():
    import spacy_angel.pipeline.abbreviations  # noqa: F401  (registers the factory)

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "DISEASE", "pattern": "Duchenne muscular dystrophy"},
            {"label": "DISEASE", "pattern": "DMD"},
            {"label": "DISEASE", "pattern": "cancer"},
        ]
    )
    nlp.add_pipe("angel_abbreviations", after="entity_ruler")
    return nlp


def test_spacy_component_sets_extensions() -> None:
    nlp = _nlp()
    doc = nlp(DMD_TEXT + " Some cancer too.")
    assert doc._.abbreviations == {"DMD": "Duchenne muscular dystrophy"}
    longs = [(e.text, e._.long_form) for e in doc.ents]
    assert ("DMD", "Duchenne muscular dystrophy") in longs
    assert ("cancer", "cancer") in longs
    assert ("Duchenne muscular dystrophy", "Duchenne muscular dystrophy") in longs


def test_spacy_component_idempotent_and_independent_docs() -> None:
    nlp = _nlp()
    nlp2 = _nlp()  # installing the extensions twice must not raise
    doc1 = nlp("DMD without a definition.")
    doc2 = nlp2(DMD_TEXT)
    assert doc1._.abbreviations == {}
    assert doc1.ents[0]._.long_form == "DMD"
    assert doc2._.abbreviations == {"DMD": "Duchenne muscular dystrophy"}
    assert "angel_abbreviations" in nlp.pipe_names


def test_long_form_without_component() -> None:
    _nlp()  # extensions installed
    doc = spacy.blank("en")("DMD here")
    assert doc._.abbreviations is None
    assert doc[0:1]._.long_form == "DMD"
