"""The ``angel_abbreviations`` component: Schwartz-Hearst pairs on a Doc, long forms on its spans.

Apart from the algorithm (:mod:`spacy_angel.pipeline.abbreviations`), which training uses without
spaCy; the factory is registered in :mod:`spacy_angel.pipeline.factories`.
"""
from __future__ import annotations

from spacy.language import Language
from spacy.tokens import Doc, Span

from spacy_angel.pipeline.abbreviations import expand_abbreviations, expand_mention


def _span_long_form(span: "Span") -> str:
    abbrs = span.doc._.abbreviations
    return expand_mention(span.text, abbrs) if abbrs else span.text


def _install_extensions() -> None:
    """Idempotent: other components (or a reload) may have installed them already."""
    if not Doc.has_extension("abbreviations"):
        Doc.set_extension("abbreviations", default=None)
    if not Span.has_extension("long_form"):
        # A getter, so the value is right for every span (not just doc.ents) and never stale.
        Span.set_extension("long_form", getter=_span_long_form)


class AbbreviationDetector:
    """Sets ``doc._.abbreviations`` (short -> long); ``span._.long_form`` expands entity spans.

    Must run after NER: it reads nothing from ``doc.ents`` itself, but ``long_form`` is meant
    for the entity spans the linker consumes.
    """

    def __init__(self, nlp: "Language", name: str = "angel_abbreviations") -> None:
        self.name = name
        _install_extensions()

    def __call__(self, doc: "Doc") -> "Doc":
        doc._.abbreviations = expand_abbreviations(doc.text)
        return doc
