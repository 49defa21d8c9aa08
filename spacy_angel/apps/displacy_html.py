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

from html import escape
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from spacy_angel.fileio import atomic_write_text
from spacy_angel.kb.id_families import kb_url
from spacy_angel.types import NIL


def _entity(start: int, end: int, label: str, kb_id: str) -> Dict[str, Any]:
    # displaCy escapes the text but puts label, id and title into its markup as given. A composite
    # mention's "ID1|ID2" (angel_linker's split_composite) is shown whole and linked to its first concept:
    # displaCy draws one link per entity.
    first = kb_id.split("|", 1)[0]
    return {"start": start, "end": end, "label": escape(label), "kb_id": escape(kb_id), "kb_url": kb_url(first) or "#"}


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
