"""Concept id families (MeSH, OMIM, HPO, UMLS, CURIEs...): which family an id is from, and its page.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional, Pattern, Tuple
from urllib.parse import quote

from spacy_angel.types import NIL


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
