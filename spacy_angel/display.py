"""Linked entities as displaCy HTML: each entity with its concept id, linked to the concept's page.

Why a room of its own: displaCy's ``ent`` style already prints ``kb_id_`` and turns it into a
link through one ``kb_url_template`` per render. That is enough for a single-vocabulary KB (HPO,
UMLS), so :func:`kb_url_template` picks the template from the ids' shape. A mixed KB such as CTD
MEDIC (MeSH and OMIM ids side by side) needs a URL per entity, which displaCy accepts in its
``manual`` input; :func:`render_html` builds that input from linked Docs, and
:func:`render_mentions` from the ``spacy-angel link`` CLI's mentions and candidates.

Ids are recognised by shape, after the KB's own normalisation (``MESH:`` / ``OMIM:`` prefixes are
dropped when a KB is built, ``HP:`` / ``DOID:`` kept). UMLS pages need a (free) UTS login.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Pattern, Sequence, Tuple, Union
from urllib.parse import quote

from .fileio import atomic_write_text

NIL = "NIL"


@dataclass(frozen=True)
class KBFamily:
    """One identifier scheme: its name, the shape of its ids, and the page URL of an id."""

    name: str
    pattern: Pattern[str]
    url_template: str  # str.format template with one ``{}`` for the id, as displaCy expects

    def url(self, kb_id: str) -> str:
        local = kb_id.split(":", 1)[1] if kb_id.upper().startswith(("MESH:", "OMIM:")) else kb_id
        return self.url_template.format(quote(local, safe=":"))


# Order matters: a UMLS CUI (C + 7 digits) is tried before MeSH (C/D + 6 or 9 digits).
KB_FAMILIES: Tuple[KBFamily, ...] = (
    KBFamily("umls", re.compile(r"C\d{7}"), "https://uts.nlm.nih.gov/uts/umls/concept/{}"),
    KBFamily("mesh", re.compile(r"(?:MESH:)?[CD]\d{6}(?:\d{3})?", re.I), "https://meshb.nlm.nih.gov/record/ui?ui={}"),
    KBFamily("omim", re.compile(r"(?:OMIM:)?\d{6}", re.I), "https://omim.org/entry/{}"),
    KBFamily("hpo", re.compile(r"HP:\d{7}"), "https://hpo.jax.org/browse/term/{}"),
    KBFamily("doid", re.compile(r"DOID:\d+"), "https://bioregistry.io/{}"),
    KBFamily("mondo", re.compile(r"MONDO:\d{7}"), "https://bioregistry.io/{}"),
    KBFamily("orphanet", re.compile(r"ORPHA(?:NET)?:\d+", re.I), "https://bioregistry.io/{}"),
    # any other prefix:local id (CHEBI:, NCBITaxon:, GO:, ...): the Bioregistry resolves CURIEs
    KBFamily("curie", re.compile(r"[A-Za-z][A-Za-z0-9_.]*:[^\s:]+"), "https://bioregistry.io/{}"),
)


def kb_family(kb_id: str) -> Optional[KBFamily]:
    """The identifier scheme of ``kb_id``, or None when its shape is unknown (or it is NIL)."""
    if not kb_id or kb_id == NIL:
        return None
    for family in KB_FAMILIES:
        if family.pattern.fullmatch(kb_id):
            return family
    return None


def kb_url(kb_id: str) -> Optional[str]:
    """The concept's page, or None for NIL and ids of unknown shape."""
    family = kb_family(kb_id)
    return family.url(kb_id) if family is not None else None


def kb_url_template(kb_ids: Iterable[str]) -> Optional[str]:
    """displaCy's ``kb_url_template`` for these ids: the one template when all linked ids share a
    family, else None (mixed KBs: use :func:`render_html`, which links every entity itself)."""
    families = {kb_family(i) for i in kb_ids if i and i != NIL}
    if len(families) != 1 or None in families:
        return None
    (family,) = families
    return family.url_template


def _entity(start: int, end: int, label: str, kb_id: str) -> Dict[str, Any]:
    # displaCy escapes the text but puts label, id and title into its markup as given
    return {"start": start, "end": end, "label": escape(label), "kb_id": escape(kb_id), "kb_url": kb_url(kb_id) or "#"}


def _non_overlapping(ents: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """displaCy's ``ent`` style draws flat, ordered spans: keep the earlier (then longer) of overlaps."""
    kept: List[Dict[str, Any]] = []
    for ent in sorted(ents, key=lambda e: (e["start"], -e["end"])):
        if not kept or ent["start"] >= kept[-1]["end"]:
            kept.append(ent)
    return kept


def doc_to_displacy(doc: Any, spans_key: Optional[str] = None, title: Optional[str] = None) -> Dict[str, Any]:
    """displaCy's manual ``ent`` input for a linked Doc: its entities (or ``doc.spans[spans_key]``)
    with ``kb_id_`` and a per-entity concept URL."""
    spans = doc.ents if spans_key is None else list(doc.spans.get(spans_key, []))
    ents = [_entity(s.start_char, s.end_char, s.label_ or "ENTITY", s.kb_id_ or NIL) for s in spans]
    title = title if title is not None else doc.user_data.get("title")
    return {"text": doc.text, "ents": _non_overlapping(ents), "title": escape(str(title)) if title is not None else None}


def render_html(docs: Union[Any, Sequence[Any]], spans_key: Optional[str] = None, page: bool = True) -> str:
    """HTML of linked Docs: entity, label and concept id linked to its page (mixed KBs included)."""
    from spacy import displacy

    docs = [docs] if hasattr(docs, "ents") else list(docs)
    parsed = [doc_to_displacy(doc, spans_key) for doc in docs]
    return displacy.render(parsed, style="ent", manual=True, page=page, minify=True)


def render_mentions(groups: Sequence[Tuple[str, str, Sequence[Tuple[int, int, str, str]]]], page: bool = True) -> str:
    """HTML of ``(doc id, text, [(start, end, label, kb_id), ...])`` groups (the ``link`` CLI's view)."""
    from spacy import displacy

    parsed = [
        {"text": text, "title": f"document {escape(str(doc_id))}",
         "ents": _non_overlapping([_entity(start, end, label, kb_id) for start, end, label, kb_id in ents])}
        for doc_id, text, ents in groups
    ]
    return displacy.render(parsed, style="ent", manual=True, page=page, minify=True)


def write_html(path: Union[str, Path], html: str) -> Path:
    """One HTML file, written atomically (no half-written page if the run dies)."""
    return atomic_write_text(path, html)


__all__ = [
    "KBFamily", "KB_FAMILIES", "NIL", "doc_to_displacy", "kb_family", "kb_url", "kb_url_template",
    "render_html", "render_mentions", "write_html",
]
