"""How ``angel_linker`` is scored: spaCy's link scores, on ``doc.ents`` or on a span group.

Apart from the component and the registrations, so both import it and neither imports the other.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, NamedTuple, Optional, Sequence

from spacy.scorer import Scorer
from spacy.training import Example

from spacy_angel.types import NIL


class _Link(NamedTuple):
    """What ``Scorer.score_links`` reads of an entity span, with its id field in canonical form."""

    start_char: int
    end_char: int
    label_: str
    kb_id_: str


class _Links(NamedTuple):
    ents: Sequence[_Link]


class _LinkExample(NamedTuple):
    """An Example as ``Scorer.score_links`` reads it (``.reference.ents`` / ``.predicted.ents``)."""

    reference: _Links
    predicted: _Links


def composite_id(kb_id: str) -> str:
    """A ``|``-separated id field (a composite mention: ``D010051|D001943``) as its sorted, de-duplicated
    ids; one id is returned as it is. The ids of a composite mention are a set: the corpus readers
    read them so, and ``split_composite`` writes them in the order of the conjuncts in the text."""
    if "|" not in kb_id:
        return kb_id
    ids = sorted({part.strip() for part in kb_id.split("|") if part.strip()})
    return "|".join(ids) if ids else kb_id


def _links(doc: Any, spans_key: Optional[str]) -> _Links:
    spans = doc.ents if spans_key is None else (list(doc.spans[spans_key]) if spans_key in doc.spans else [])
    return _Links([_Link(s.start_char, s.end_char, s.label_, composite_id(s.kb_id_)) for s in spans])


def angel_linker_score(examples: Iterable[Example], *, spans_key: Optional[str] = None, **kwargs: Any) -> Dict[str, Any]:
    """spaCy's own link scores (``nel_micro_p/r/f``), as for its EntityLinker: only predicted spans
    whose offsets match a gold entity count, and ``NIL`` on both sides is a true negative.

    With ``spans_key`` the same count runs on ``doc.spans[spans_key]`` of both sides. Id strings
    are compared as spaCy compares them, except that a composite field (``ID1|ID2``) is compared
    as a set of ids (:func:`composite_id`): ``D2|D1`` equals ``D1|D2``; one predicted id against a
    composite gold field stays wrong (all of the mention's concepts must be found)."""
    views = [_LinkExample(_links(eg.reference, spans_key), _links(eg.predicted, spans_key)) for eg in examples]
    return Scorer.score_links(views, negative_labels=[NIL], **kwargs)
