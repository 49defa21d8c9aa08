"""Entity spans from several NER models, by vote: ``angel_ents_to_spans`` and ``angel_ner_vote``.

Why: NER seeds of one recipe disagree on the rare and long mentions, and a majority of them is
right more often than any one seed (docs/results/ner_vote_dev.json: NCBI-disease dev). The two
components keep every NER plug-compatible: each NER (spaCy's, scispacy's, a transformer) writes
``doc.ents`` as usual, ``angel_ents_to_spans`` moves them to a span group of its own so the next NER
starts from a clean Doc, and ``angel_ner_vote`` sets ``doc.ents`` to the spans enough groups agree on.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example

from spacy_angel.errors import Errors

SpanKey = Tuple[int, int, str]  # token start, token end, label


def vote_spans(groups: Sequence[Iterable[SpanKey]], min_votes: int) -> List[SpanKey]:
    """The spans at least ``min_votes`` groups hold (same tokens, same label), without overlaps.

    Overlapping winners are settled by more votes, then the longer span, then the earlier one, so
    the result does not depend on the order of the groups. Sorted by position.
    """
    votes: Counter = Counter()
    for group in groups:
        votes.update(set(group))  # one vote per group, even if a group repeats a span
    ranked = sorted((key for key, n in votes.items() if n >= min_votes),
                    key=lambda key: (-votes[key], -(key[1] - key[0]), key[0], key[2]))
    taken: List[SpanKey] = []
    used = set()
    for start, end, label in ranked:
        tokens = range(start, end)
        if not used.intersection(tokens):
            used.update(tokens)
            taken.append((start, end, label))
    return sorted(taken)


class EntsToSpans:
    """Moves ``doc.ents`` into ``doc.spans[spans_key]`` and clears them, for a vote further down."""

    def __init__(self, nlp: Language, name: str, spans_key: str) -> None:
        if not spans_key:
            raise ValueError(Errors.E461.format(name=name))
        self.name = name
        self.spans_key = spans_key

    def __call__(self, doc: Doc) -> Doc:
        doc.spans[self.spans_key] = list(doc.ents)
        doc.ents = []
        return doc


class NerVote:
    """Sets ``doc.ents`` to the spans held by at least ``min_votes`` of the span groups ``spans_keys``."""

    def __init__(self, nlp: Language, name: str, spans_keys: Sequence[str], min_votes: int,
                 scorer: Optional[Callable[..., Dict[str, Any]]] = None) -> None:
        keys = list(spans_keys)
        if not keys or len(set(keys)) != len(keys) or not 1 <= min_votes <= len(keys):
            raise ValueError(Errors.E462.format(name=name, keys=keys, min_votes=min_votes))
        self.name = name
        self.spans_keys = keys
        self.min_votes = min_votes
        self.scorer = scorer

    def __call__(self, doc: Doc) -> Doc:
        missing = [key for key in self.spans_keys if key not in doc.spans]
        if missing:
            raise ValueError(Errors.E463.format(name=self.name, missing=missing, have=sorted(doc.spans)))
        groups = [[(s.start, s.end, s.label_) for s in doc.spans[key]] for key in self.spans_keys]
        doc.ents = [Span(doc, start, end, label=label) for start, end, label in vote_spans(groups, self.min_votes)]
        return doc

    def score(self, examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
        """Entity P/R/F with the configured scorer (spaCy's ``spacy.ner_scorer.v1`` by default)."""
        return self.scorer(examples, **kwargs) if self.scorer is not None else {}


def add_ner_vote(nlp: Language, voters: Sequence[Language], min_votes: int, first: str = "ner") -> NerVote:
    """Turn ``nlp``'s NER ``first`` into a vote with the NER of each pipeline in ``voters``.

    Each voter's ``ner`` is copied in with its own tok2vec (spaCy's ``replace_listeners``), so the
    models stay what they were trained as; after each NER an ``angel_ents_to_spans`` keeps its spans.
    """
    keys = [first]
    nlp.add_pipe("angel_ents_to_spans", name=f"{first}_spans", after=first, config={"spans_key": first})
    last = f"{first}_spans"
    for number, voter in enumerate(voters, start=1):
        name = f"{first}_{number}"
        if voter.has_pipe("tok2vec") and "ner" in getattr(voter.get_pipe("tok2vec"), "listening_components", []):
            voter.replace_listeners("tok2vec", "ner", ["model.tok2vec"])
        nlp.add_pipe("ner", name=name, source=voter, after=last)
        nlp.add_pipe("angel_ents_to_spans", name=f"{name}_spans", after=name, config={"spans_key": name})
        last = f"{name}_spans"
        keys.append(name)
    return nlp.add_pipe("angel_ner_vote", after=last, config={"spans_keys": keys, "min_votes": min_votes})
