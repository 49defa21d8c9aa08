"""How ``angel_linker`` is scored: spaCy's link scores, on ``doc.ents`` or on a span group.

Apart from the component and the registrations, so both import it and neither imports the other.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, NamedTuple, Optional, Sequence

from spacy.scorer import Scorer
from spacy.tokens import Span
from spacy.training import Example

from spacy_angel.types import NIL


class _SpansAsEnts(NamedTuple):
    ents: Sequence[Span]


class _SpanGroupExample(NamedTuple):
    """An Example seen through one span group: ``Scorer.score_links`` reads only ``.ents``."""

    reference: _SpansAsEnts
    predicted: _SpansAsEnts

    @classmethod
    def of(cls, example: Example, key: str) -> "_SpanGroupExample":
        group = lambda doc: _SpansAsEnts(list(doc.spans[key]) if key in doc.spans else [])  # noqa: E731
        return cls(group(example.reference), group(example.predicted))


def angel_linker_score(examples: Iterable[Example], *, spans_key: Optional[str] = None, **kwargs: Any) -> Dict[str, Any]:
    """spaCy's own link scores (``nel_micro_p/r/f``), as for its EntityLinker: only predicted spans
    whose offsets match a gold entity count, and ``NIL`` on both sides is a true negative.

    With ``spans_key`` the same count runs on ``doc.spans[spans_key]`` of both sides."""
    if spans_key is not None:
        examples = [_SpanGroupExample.of(eg, spans_key) for eg in examples]
    return Scorer.score_links(examples, negative_labels=[NIL], **kwargs)
