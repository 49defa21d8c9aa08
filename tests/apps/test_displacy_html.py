"""displaCy views of linked entities: concept ids shown and linked to the concept's page."""
from __future__ import annotations

import json

import pytest
import spacy
from spacy import displacy
from typer.testing import CliRunner

from spacy_angel.apps.cli import get_app
from spacy_angel.kb.id_families import kb_family, kb_url, kb_url_template
from spacy_angel.apps.displacy_html import render_html, render_mentions, write_html


@pytest.mark.parametrize(
    "kb_id,family,url",
    [
        ("D001943", "mesh", "https://meshb.nlm.nih.gov/record/ui?ui=D001943"),
        ("MESH:D001943", "mesh", "https://meshb.nlm.nih.gov/record/ui?ui=D001943"),
        ("C537914", "mesh", "https://meshb.nlm.nih.gov/record/ui?ui=C537914"),  # supplementary concept
        ("C0006142", "umls", "https://uts.nlm.nih.gov/uts/umls/concept/C0006142"),
        ("215600", "omim", "https://omim.org/entry/215600"),
        ("OMIM:215600", "omim", "https://omim.org/entry/215600"),
        ("HP:0000118", "hpo", "https://hpo.jax.org/browse/term/HP:0000118"),
        ("DOID:1612", "doid", "https://bioregistry.io/DOID:1612"),
        ("MONDO:0007254", "mondo", "https://bioregistry.io/MONDO:0007254"),
        ("CHEBI:15377", "curie", "https://bioregistry.io/CHEBI:15377"),
    ],
)
def test_kb_family_and_url_from_the_id(kb_id, family, url):
    assert kb_family(kb_id).name == family
    assert kb_url(kb_id) == url


def test_nil_and_unknown_ids_get_no_link():
    assert kb_url("NIL") is None and kb_url("") is None and kb_url("some id") is None
    assert kb_url_template(["HP:0000118", "HP:0000001", "NIL"]) == "https://hpo.jax.org/browse/term/{}"
    assert kb_url_template(["D001943", "215600"]) is None  # mixed MEDIC ids: one template cannot serve both


@pytest.fixture(scope="module")
def linked_doc(tiny_model_dir, tiny_kb_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"}).add_patterns(
        [{"label": "DISEASE", "pattern": p} for p in ("breast cancer", "migraine")]
    )
    nlp.add_pipe("angel_linker", config={"model": str(tiny_model_dir), "kb": str(tiny_kb_dir), "device": "cpu"})
    return nlp("Women with breast cancer <and> migraine.")


def test_displacy_ent_style_shows_the_concept_ids(linked_doc):
    ids = [e.kb_id_ for e in linked_doc.ents]
    html = displacy.render(linked_doc, style="ent")
    assert all(i in html for i in ids)
    template = kb_url_template(ids)
    html = displacy.render(linked_doc, style="ent", options={"kb_url_template": template})
    assert all(f'href="{template.format(i)}"' in html for i in ids)


def test_render_html_links_each_entity(linked_doc, tmp_path):
    html = render_html([linked_doc])
    for ent in linked_doc.ents:
        assert ent.kb_id_ in html and f'href="{kb_url(ent.kb_id_)}"' in html
    assert "&lt;and&gt;" in html and "<and>" not in html  # text is escaped
    path = write_html(tmp_path / "out" / "view.html", html)
    assert path.read_text(encoding="utf-8") == html and not list((tmp_path / "out").glob(".*tmp"))


def test_render_mentions_mixed_families_and_overlaps():
    text = "BRCA1 breast cancer and Tay-Sachs"
    html = render_mentions([("doc <1>", text, [(6, 19, "breast carcinoma", "D001943"), (13, 19, "cancer", "D009369"),
                                               (24, 33, "tay-sachs disease", "272800"), (0, 5, "NIL", "NIL")])])
    assert 'href="https://meshb.nlm.nih.gov/record/ui?ui=D001943"' in html
    assert 'href="https://omim.org/entry/272800"' in html
    assert "D009369" not in html  # overlapping the earlier, longer mention: displaCy draws flat spans
    assert "doc &lt;1&gt;" in html


def test_link_cli_writes_an_html_view(tmp_path):
    runner = CliRunner()
    (tmp_path / "kb.tsv").write_text("D001943\tbreast cancer\nD008881\tmigraine\n215600\tcystic fibrosis\n")
    assert runner.invoke(get_app(), ["kb", "build", str(tmp_path / "kb.tsv"), "--output", str(tmp_path / "kb")]).exit_code == 0
    assert runner.invoke(get_app(), ["init-model", str(tmp_path / "kb"), str(tmp_path / "model")]).exit_code == 0
    text = "She had breast cancer, migraine and cystic fibrosis."
    spans = [{"start": text.index(m), "end": text.index(m) + len(m)} for m in ("breast cancer", "migraine", "cystic fibrosis")]
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "d1", "text": text, "spans": spans}) + "\n")
    result = runner.invoke(get_app(), ["link", str(tmp_path / "model"), str(tmp_path / "kb"), str(tmp_path / "in.jsonl"),
                                       "-o", str(tmp_path / "out.jsonl"), "--device", "cpu", "--html", str(tmp_path / "view.html")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "view.html").read_text(encoding="utf-8")
    top = [json.loads(line)["candidates"][0]["ids"][0] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(top) == 3
    for kb_id in top:
        assert kb_id in html and f'href="{kb_url(kb_id)}"' in html
    assert "document d1" in html


def test_a_composite_mention_shows_both_ids_and_links_its_first_concept():
    """angel_linker(split_composite=True) writes "ID1|ID2" into kb_id_ (one span, two concepts)."""
    html = render_mentions([("d1", "breast and ovarian cancer", [(0, 25, "DISEASE", "D001943|D010051")])])
    assert "D001943|D010051" in html
    assert kb_url("D001943") in html and kb_url("D001943|D010051") is None  # the whole field is no id
