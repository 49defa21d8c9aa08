"""What a corpus reader returns: the mentions and a report of what was read and dropped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Optional, Set

from spacy_angel.types import Mention

# ``preprocess`` normalises mentions rather than reading them; it lives in training.data.preprocess and
# stays importable from here (imported last: that module uses MentionList and ReadReport).


# --------------------------------------------------------------------------- result containers
@dataclass
class ReadReport:
    """What a reader saw and skipped; cheap to log next to a training run."""

    path: str = ""
    format: str = ""
    documents: int = 0
    records: int = 0  # annotation lines / rows / entities read
    mentions: int = 0  # Mention records produced
    composite: int = 0  # records with several concepts ('|')
    conjunct: int = 0  # records needing all listed concepts ('+')
    split: int = 0  # composite records split into per-concept mentions
    dropped_composite: int = 0  # composite records dropped (composite="drop")
    skipped_unnormalisable: int = 0  # records whose ids were all -1 / NIL
    partially_unnormalisable: int = 0  # records that kept some ids but lost a -1
    skipped_no_kb_id: int = 0  # DocBin entities without kb_id_
    trailing_space_fixed: int = 0  # offsets whose text differed only by trailing whitespace

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class MentionList(List[Mention]):
    """A plain ``list`` of mentions that also carries its :class:`ReadReport`.

    ``conjunct`` is the set of mentions read from a ``+`` id field (a set, not a parallel list,
    so it stays right when the list is filtered or re-ordered; identical records share status).
    """

    def __init__(self, items: Iterable[Mention] = (), report: Optional[ReadReport] = None,
                 conjunct: Iterable[Mention] = ()) -> None:
        super().__init__(items)
        self.report: ReadReport = report if report is not None else ReadReport()
        self.conjunct: Set[Mention] = set(conjunct)

    def is_conjunct(self, mention: Mention) -> bool:
        return mention in self.conjunct
