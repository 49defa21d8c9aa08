"""The two records every stage shares: a mention in its text, and a ranked KB candidate."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]  # what every reader and writer takes as a path


@dataclass(frozen=True)
class Mention:
    """One entity mention: ``text[start:end]`` is the surface form, the rest of ``text`` is its context.

    ``gold_ids`` holds normalised concept ids when known (training and evaluation); a mention
    of a composite/conjunct concept carries several ids. ``text`` may be just the mention
    (no context), in which case ``start == 0`` and ``end == len(text)``.
    """

    doc_id: str
    text: str
    start: int
    end: int
    gold_ids: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def surface(self) -> str:
        return self.text[self.start : self.end]

    @classmethod
    def bare(cls, surface: str, gold_ids: Tuple[str, ...] = (), doc_id: str = "") -> "Mention":
        """A mention without context (AskAPatient-style data, or a lookup by name)."""
        return cls(doc_id, surface, 0, len(surface), tuple(gold_ids))


@dataclass(frozen=True)
class Candidate:
    """A KB name produced by the constrained decoder, with the concept ids it denotes.

    ``score`` is the length-normalised log-probability of the name under the model
    (higher is better; ``exp(score)`` is the geometric-mean token probability in (0, 1]).
    """

    kb_ids: Tuple[str, ...]
    name: str
    score: float

    @property
    def probability(self) -> float:
        import math

        return math.exp(self.score)


NIL = "NIL"  # the kb_id_ of a span left unlinked: the string spaCy's EntityLinker uses (EntityLinker.NIL)
