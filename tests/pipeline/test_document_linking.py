"""Document-level linking in ``angel_linker``: abbreviation propagation, one sense per document,
composite mentions split into conjuncts (issue 28, item 2).

The tiny model is untrained, so these tests assert what the document-level code decides, not that
the model is right: composite conjuncts that are exact KB names are decided by hybrid mode's exact
and TF-IDF features, and the vote runs on candidates given to it through a patched ``link``.
"""
from __future__ import annotations

import math

import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.training import Example

from conftest import make_tiny_kb
from spacy_angel.pipeline.composite import FIXED_COORDINATIONS, singular, split_composite
from spacy_angel.pipeline.document_linking import SpanPrediction, decide_document, first_definitions, plan_document
from spacy_angel.pipeline.scoring import angel_linker_score, composite_id
from spacy_angel.types import Candidate, Mention

SWITCHES = ("abbreviation_propagation", "one_sense_per_document", "split_composite")
LONG = "hereditary nonpolyposis colorectal cancer"
HNPCC_ID, OVARIAN_ID, BREAST_ID, LUNG_ID = "D003123", "D010051", "D001943", "D008175"
T1D, T2D = "D003922", "D003924"


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory):
    """The tiny KB plus "ovarian cancer" and HNPCC's long form (the tiny model reads any text)."""
    kb = make_tiny_kb()
    kb.add(OVARIAN_ID, "ovarian cancer")
    kb.add(HNPCC_ID, LONG)
    path = tmp_path_factory.mktemp("kb") / "kb"
    kb.to_disk(path)
    return path


def make_nlp(model_dir, kb_dir, patterns, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"}).add_patterns(
        [{"label": "DISEASE", "pattern": p} for p in patterns]
    )
    nlp.add_pipe("angel_linker", config={"model": str(model_dir), "kb": str(kb_dir), "device": "cpu", **config})
    return nlp


def links(doc):
    return [(e.text, e.kb_id_, e._.cui, e._.cuis, e._.cui_score, e._.candidates) for e in doc.ents]


# ---------------------------------------------------------------------------- the splitter
@pytest.mark.parametrize(
    "text,conjuncts",
    [
        ("breast and ovarian cancer", ("breast cancer", "ovarian cancer")),
        ("breast or ovarian cancers", ("breast cancer", "ovarian cancer")),
        ("breast and/or ovarian cancer", ("breast cancer", "ovarian cancer")),
        ("type 1 and 2 diabetes", ("type 1 diabetes", "type 2 diabetes")),
        ("types I and II diabetes mellitus", ("type I diabetes mellitus", "type II diabetes mellitus")),
        ("type 1 and type 2 diabetes", ("type 1 diabetes", "type 2 diabetes")),
        ("hemophilia A and B", ("hemophilia A", "hemophilia B")),
        ("colorectal, endometrial, and ovarian cancers", ("colorectal cancer", "endometrial cancer", "ovarian cancer")),
        ("colorectal, endometrial and ovarian cancer", ("colorectal cancer", "endometrial cancer", "ovarian cancer")),
        ("Duchenne and Becker muscular dystrophies", ("Duchenne muscular dystrophy", "Becker muscular dystrophy")),
        ("breast cancer and ovarian cancer", ("breast cancer", "ovarian cancer")),
        ("insulin-dependent and non-insulin-dependent diabetes", ("insulin-dependent diabetes", "non-insulin-dependent diabetes")),
    ],
)
def test_composite_mentions_are_split_into_conjuncts(text, conjuncts):
    assert split_composite(text) == conjuncts


@pytest.mark.parametrize(
    "text",
    [
        "breast cancer",
        "ataxia telangiectasia",
        "ataxia-telangiectasia",
        "head and neck cancer",  # the known hard case: one concept (FIXED_COORDINATIONS)
        "Head and Neck squamous cell carcinoma",
        "hand, foot and mouth disease",
        "hereditary breast and ovarian cancer",  # HBOC, one syndrome: the first item is longer than the last's modifier
        "diabetes and hypertension",  # unlike heads: left whole without a KB
        "carcinoma, ductal",  # an inverted name, not a list
        "pre- and postnatal death",  # suspended hyphen
        "breast/ovarian cancer",  # slash: not handled
        "cancer of the breast and ovary",  # head before the items: not handled
        "breast and ovarian",  # no shared head
        "A and B or C cancer",  # two different conjunctions
        "deficiency (A and B)",
        "",
    ],
)
def test_phrases_that_are_not_composite_are_kept_whole(text):
    assert split_composite(text) == (text,)


def test_a_kb_decides_names_and_coordinations_of_names():
    names = {"diabetes", "hypertension", "head and neck cancer", "breast and ovarian cancer syndrome"}
    is_name = names.__contains__
    assert split_composite("diabetes and hypertension", is_name) == ("diabetes", "hypertension")
    assert split_composite("breast and ovarian cancer syndrome", is_name) == ("breast and ovarian cancer syndrome",)
    assert split_composite("breast and ovarian cancer syndrome") == ("breast cancer syndrome", "ovarian cancer syndrome")
    assert split_composite("breast and ovarian cancer", is_name) == ("breast cancer", "ovarian cancer")
    assert "head and neck" in FIXED_COORDINATIONS


@pytest.mark.parametrize(
    "word,expected",
    [("cancers", "cancer"), ("dystrophies", "dystrophy"), ("Tumors", "Tumor"), ("metastases", "metastasis"),
     ("diabetes", "diabetes"), ("herpes", "herpes"), ("syphilis", "syphilis"), ("lupus", "lupus"),
     ("illness", "illness"), ("cancer", "cancer"), ("DISEASES", "DISEASE")],
)
def test_singular(word, expected):
    assert singular(word) == expected


# ---------------------------------------------------------------------------- composite spans in the pipeline
COMPOSITE_TEXT = "Carriers had breast and ovarian cancer, breast or lung cancers, or type 1 and 2 diabetes mellitus; some had migraine."
COMPOSITE_PATTERNS = ["breast and ovarian cancer", "breast or lung cancers", "type 1 and 2 diabetes mellitus", "migraine"]


def test_a_composite_span_gets_every_conjuncts_concept(tiny_model_dir, kb_dir):
    nlp = make_nlp(tiny_model_dir, kb_dir, COMPOSITE_PATTERNS, split_composite=True)  # mode: hybrid (the default)
    ents = nlp(COMPOSITE_TEXT).ents
    assert [e.text for e in ents] == COMPOSITE_PATTERNS
    expected = [(BREAST_ID, OVARIAN_ID), (BREAST_ID, LUNG_ID), (T1D, T2D)]
    for ent, ids in zip(ents[:3], expected):
        assert ent._.cuis == ids  # each conjunct is an exact KB name: exact match + TF-IDF decide
        assert ent.kb_id_ == "|".join(ids) and ent._.cui == ids[0]
        assert all(t.ent_kb_id_ == ent.kb_id_ for t in ent)
        candidate_ids = [c[0] for c in ent._.candidates]
        assert set(ids) <= set(candidate_ids) and len(candidate_ids) == len(set(candidate_ids))
        assert ent._.cui_score == min(score for kb_id, _, score in ent._.candidates if kb_id in ids)
    assert ents[3]._.cuis == (ents[3]._.cui,) and "|" not in ents[3].kb_id_  # a plain span: one id


def test_with_split_composite_off_a_span_gets_one_concept(tiny_model_dir, kb_dir):
    nlp = make_nlp(tiny_model_dir, kb_dir, COMPOSITE_PATTERNS)
    for ent in nlp(COMPOSITE_TEXT).ents:
        assert ent._.cuis == (ent._.cui,) and ent.kb_id_ == ent._.cui and "|" not in ent.kb_id_
        assert ent._.cui == ent._.candidates[0][0]


def test_a_span_whose_text_is_a_kb_name_is_not_split(tiny_model_dir, tmp_path):
    kb = make_tiny_kb()
    kb.add("D006258", "head and neck cancer")
    kb.add("D999999", "breast and lung cancer")  # a KB name, though the splitter would split it
    kb.to_disk(tmp_path / "kb")
    nlp = make_nlp(tiny_model_dir, tmp_path / "kb", ["head and neck cancer", "breast and lung cancer"], split_composite=True)
    ents = nlp("head and neck cancer; breast and lung cancer").ents
    assert [e._.cuis for e in ents] == [("D006258",), ("D999999",)]


def test_composite_conjuncts_below_threshold_are_dropped():
    part = lambda *pairs: [Candidate((i,), i.lower(), math.log(p)) for i, p in pairs]  # noqa: E731
    prediction = SpanPrediction(parts=(part(("A", 0.9), ("B", 0.05)), part(("C", 0.3)), part(("A", 0.8))))
    name_of = lambda c: c.name  # noqa: E731
    (d,) = decide_document([prediction], ["x"], threshold=0.0, name_of=name_of)
    assert d.ids == ("A", "C") and d.name == "a" and d.score == pytest.approx(0.3)  # duplicates dropped, weakest kept
    assert [i for i, _, _ in d.ranked] == ["A", "C", "B"]
    (d,) = decide_document([prediction], ["x"], threshold=0.5, name_of=name_of)
    assert d.ids == ("A",) and d.score == pytest.approx(0.8)
    (d,) = decide_document([prediction], ["x"], threshold=0.95, name_of=name_of)
    assert d.ids == () and d.name is None and d.score == pytest.approx(0.9)


# ---------------------------------------------------------------------------- abbreviation propagation
HNPCC_TEXT = (
    "HNPCC was rare. Hereditary nonpolyposis colorectal cancer (HNPCC) is inherited. "
    "Most HNPCC patients carry MLH1 mutations; HNPCC screening helps."
)


def test_an_abbreviation_defined_once_links_as_its_long_form_everywhere_after(tiny_model_dir, kb_dir):
    nlp = make_nlp(tiny_model_dir, kb_dir, [LONG, "HNPCC"], abbreviation_propagation=True)
    doc = nlp(HNPCC_TEXT)
    early, long_form, *later = doc.ents
    assert long_form.text.lower() == LONG and len(later) == 3  # "(HNPCC)" and two bare occurrences
    assert long_form._.cui == HNPCC_ID  # an exact KB name in hybrid mode
    for ent in later:
        assert (ent.kb_id_, ent._.cui, ent._.cuis, ent._.kb_name, ent._.cui_score, ent._.candidates) == (
            long_form.kb_id_, long_form._.cui, long_form._.cuis, long_form._.kb_name, long_form._.cui_score, long_form._.candidates)
    # before its definition the short form is linked from its own surface
    [own] = nlp.get_pipe("angel_linker").linker.link([Mention.bare("HNPCC")], top_k=5)
    assert early._.cui == own[0].kb_ids[0]


def test_without_propagation_each_short_form_is_linked_from_its_own_surface(tiny_model_dir, kb_dir):
    nlp = make_nlp(tiny_model_dir, kb_dir, [LONG, "HNPCC"])  # and no angel_abbreviations: no expansion either
    doc = nlp(HNPCC_TEXT)
    [own] = nlp.get_pipe("angel_linker").linker.link([Mention.bare("HNPCC")], top_k=5)
    hnpcc = [e for e in doc.ents if e.text == "HNPCC"]
    assert len(hnpcc) == 4
    assert all(e._.cui == own[0].kb_ids[0] and [c[0] for c in e._.candidates] == [c.kb_ids[0] for c in own] for e in hnpcc)


def test_without_a_long_form_span_the_short_form_is_linked_as_the_long_form(tiny_model_dir, kb_dir):
    nlp = make_nlp(tiny_model_dir, kb_dir, ["HNPCC"], abbreviation_propagation=True)
    ents = nlp(HNPCC_TEXT).ents
    assert len(ents) == 4 and all(e._.cui == HNPCC_ID for e in ents[1:])  # an exact KB name in hybrid mode
    [own] = nlp.get_pipe("angel_linker").linker.link([Mention.bare("HNPCC")], top_k=5)
    assert ents[0]._.cui == own[0].kb_ids[0]  # before the definition


def test_propagation_is_kept_per_document(tiny_model_dir, kb_dir):
    nlp = make_nlp(tiny_model_dir, kb_dir, [LONG, "HNPCC"], abbreviation_propagation=True)
    defined, bare = nlp.pipe([HNPCC_TEXT, "Most HNPCC patients carry MLH1 mutations."], batch_size=2)
    [own] = nlp.get_pipe("angel_linker").linker.link([Mention.bare("HNPCC")], top_k=5)
    assert defined.ents[-1]._.cui == HNPCC_ID
    assert bare.ents[0]._.cui == own[0].kb_ids[0]  # no definition in this doc: its own surface


def test_the_plan_of_propagation():
    text = "HNPCC. Hereditary nonpolyposis colorectal cancer (HNPCC) and HNPCC; APC (adenomatous polyposis coli) and APC."
    assert [d[:2] for d in first_definitions(text)] == [("HNPCC", "Hereditary nonpolyposis colorectal cancer"),
                                                         ("APC", "adenomatous polyposis coli")]
    doc = spacy.blank("en")(text)
    spans = [doc.char_span(m, m + len(t)) for t, m in _occurrences(text, ["HNPCC", "Hereditary nonpolyposis colorectal cancer", "APC"])]
    plans = plan_document(text, spans, [s.text for s in spans], propagate=True)
    # spans: HNPCC(0), long form(1), (HNPCC)(2), HNPCC(3), APC(4), APC(5)
    assert [(p.surfaces, p.source) for p in plans] == [
        (("HNPCC",), None), (("Hereditary nonpolyposis colorectal cancer",), None), ((), 1), ((), 1),
        (("adenomatous polyposis coli",), None), (("adenomatous polyposis coli",), None),  # no long-form span
    ]


def _occurrences(text, needles):
    import re

    found = sorted((m.start(), t) for t in needles for m in re.finditer(r"(?<!\w)" + re.escape(t) + r"(?!\w)", text))
    return [(t, s) for s, t in found]


# ---------------------------------------------------------------------------- one sense per document
SENSE_TEXT = "Migraine came first. Then migraine again. MIGRAINE at last, and hypertension."
#: candidates per mention (by start char): two of three rank A first, but B has the higher sum
FAKE = {0: [("A", 0.5), ("B", 0.3)], 26: [("B", 0.9)], 42: [("A", 0.6), ("B", 0.2)], 64: [("C", 0.7)]}


def _fake_link(mentions, top_k=5, progress=False, mode=None):
    return [[Candidate((kb_id,), kb_id.lower(), math.log(p)) for kb_id, p in FAKE[m.start]] for m in mentions]


@pytest.fixture
def sense_nlp(tiny_model_dir, kb_dir, monkeypatch):
    def make(**config):
        nlp = make_nlp(tiny_model_dir, kb_dir, ["migraine", "hypertension"], **config)
        monkeypatch.setattr(nlp.get_pipe("angel_linker").linker, "link", _fake_link)
        return nlp
    return make


def test_one_sense_per_document_gives_one_surface_one_concept_by_summed_scores(sense_nlp):
    doc = sense_nlp(one_sense_per_document=True)(SENSE_TEXT)
    assert [e.start_char for e in doc.ents] == sorted(FAKE)
    *migraines, hypertension = doc.ents
    assert [e._.cui for e in migraines] == ["B", "B", "B"]  # sums: A 1.1, B 1.4
    assert all(e.kb_id_ == "B" and e._.cuis == ("B",) and e._.cui_score == pytest.approx(1.4 / 3) for e in migraines)
    assert [c[0] for c in migraines[0]._.candidates] == ["A", "B"]  # each mention keeps its own ranking
    assert (hypertension._.cui, hypertension._.cui_score) == ("C", pytest.approx(0.7))  # alone: untouched


def test_without_one_sense_mentions_keep_their_own_concepts(sense_nlp):
    doc = sense_nlp()(SENSE_TEXT)
    assert [(e._.cui, round(e._.cui_score, 6)) for e in doc.ents] == [("A", 0.5), ("B", 0.9), ("A", 0.6), ("C", 0.7)]


def test_the_threshold_applies_to_the_voted_score(sense_nlp):
    doc = sense_nlp(one_sense_per_document=True, threshold=0.5)(SENSE_TEXT)
    assert [e.kb_id_ for e in doc.ents] == ["NIL", "NIL", "NIL", "C"]  # mean 0.467 < 0.5
    assert all(e._.cuis == () and e._.cui is None for e in doc.ents[:3])


def test_the_vote_breaks_ties_by_the_earliest_mention():
    cand = lambda i, p: Candidate((i,), i, math.log(p))  # noqa: E731
    predictions = [SpanPrediction([cand("B", 0.5), cand("A", 0.5)]), SpanPrediction([cand("A", 0.5), cand("B", 0.5)])]
    decisions = decide_document(predictions, ["x", "X"], threshold=0.0, name_of=lambda c: c.name, one_sense=True)
    assert [d.ids for d in decisions] == [("B",), ("B",)]


# ---------------------------------------------------------------------------- config, serialization, scoring
def test_the_switches_default_to_off(tiny_model_dir, kb_dir):
    from spacy.language import Language

    defaults = Language.get_factory_meta("angel_linker").default_config
    assert all(defaults[s] is False for s in SWITCHES)
    assert "span._.cuis" in Language.get_factory_meta("angel_linker").assigns
    component = make_nlp(tiny_model_dir, kb_dir, []).get_pipe("angel_linker")
    assert all(component.cfg[s] is False for s in SWITCHES)


def test_the_switches_round_trip_through_to_disk_and_spacy_load(tiny_model_dir, kb_dir, tmp_path):
    patterns = [LONG, "HNPCC", "migraine"] + COMPOSITE_PATTERNS
    nlp = make_nlp(tiny_model_dir, kb_dir, patterns, **{s: True for s in SWITCHES})
    texts = [HNPCC_TEXT, COMPOSITE_TEXT, SENSE_TEXT]
    before = [links(d) for d in nlp.pipe(texts)]
    nlp.to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(tmp_path / "pipeline")
    component = reloaded.get_pipe("angel_linker")
    assert all(component.cfg[s] is True for s in SWITCHES)
    assert all(reloaded.config["components"]["angel_linker"][s] is True for s in SWITCHES)
    assert [links(d) for d in reloaded.pipe(texts)] == before
    assert any("|" in e.kb_id_ for e in reloaded(COMPOSITE_TEXT).ents)


def test_set_annotations_still_takes_plain_candidate_lists(tiny_model_dir, kb_dir):
    nlp = make_nlp(tiny_model_dir, kb_dir, ["migraine"])
    doc = nlp.get_pipe("entity_ruler")(nlp.make_doc("migraine"))
    nlp.get_pipe("angel_linker").set_annotations([doc], [[[Candidate(("D008881",), "migraine", math.log(0.8))]]])
    assert (doc.ents[0].kb_id_, doc.ents[0]._.cuis, doc.ents[0]._.cui_score) == ("D008881", ("D008881",), pytest.approx(0.8))


def test_the_scorer_reads_composite_ids_as_sets():
    assert composite_id("D2|D1") == composite_id("D1|D2") == "D1|D2" and composite_id("D1") == "D1"
    vocab = spacy.blank("en").vocab

    def doc(kb_ids):
        d = Doc(vocab, words=["a", "b", "c"])
        d.ents = [Span(d, i, i + 1, label="D", kb_id=k) for i, k in enumerate(kb_ids)]
        return d

    gold = doc(["D1|D2", "D3|D4", "D5"])
    scores = angel_linker_score([Example(doc(["D2|D1", "D3", "D5"]), gold)])
    assert scores["nel_micro_p"] == pytest.approx(2 / 3)  # one id of a composite field is not enough
