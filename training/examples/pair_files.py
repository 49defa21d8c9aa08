"""Preference pair files (JSONL): the record, strict reading with file and line, atomic writing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple, Union

from spacy_angel.errors import Errors
from spacy_angel.fileio import atomic_open, iter_jsonl
from spacy_angel.seq2seq.prompt import prompt_for
from spacy_angel.types import Mention


@dataclass(frozen=True)
class PreferencePair:
    """One (mention, chosen name, rejected name) record, as written by ``train mine``.

    The mention is stored with its text and offsets (not as token ids) so the pair file stays
    readable and valid for any model that shares the input format.
    """

    doc_id: str
    text: str
    start: int
    end: int
    gold_ids: Tuple[str, ...]
    chosen: str
    rejected: str
    chosen_rank: int = -1  # rank in the model's top-k (0 = top-1); -1 when not from the model
    rejected_rank: int = -1
    source: Optional[str] = None  # pre-formatted encoder text (KB pre-training); overrides text/start/end
    prompt: Optional[str] = None
    fold: Optional[int] = None  # cross-fitted mining: the fold whose held-out model mined the pair

    @property
    def mention(self) -> Mention:
        return Mention(self.doc_id, self.text, self.start, self.end, self.gold_ids)

    @property
    def inputs(self) -> Union[Mention, Tuple[str, str]]:
        """What :func:`seq2seq_example` takes: the mention, or the pre-formatted (source, prompt)."""
        if self.source is not None:
            return (self.source, self.prompt if self.prompt is not None else prompt_for(self.mention.surface))
        return self.mention

    def to_json(self) -> str:
        return json.dumps(
            {
                "doc_id": self.doc_id,
                "text": self.text,
                "start": self.start,
                "end": self.end,
                "mention": self.text[self.start : self.end],
                "gold_ids": list(self.gold_ids),
                "chosen": self.chosen,
                "rejected": self.rejected,
                "chosen_rank": self.chosen_rank,
                "rejected_rank": self.rejected_rank,
                **({"source": self.source, "prompt": self.prompt} if self.source is not None else {}),
                **({"fold": self.fold} if self.fold is not None else {}),
            },
            ensure_ascii=False,
        )


REQUIRED_PAIR_FIELDS = ("text", "start", "end", "chosen", "rejected")


def read_pairs(path: Union[str, Path]) -> Iterator[PreferencePair]:
    """Read a pairs JSONL file; a malformed line raises ``ValueError`` naming file and line."""
    for lineno, rec in iter_jsonl(path):
        missing = [f for f in REQUIRED_PAIR_FIELDS if f not in rec]
        if missing:
            raise ValueError(Errors.E330.format(path=path, lineno=lineno, fields=", ".join(missing)))
        text, start, end = rec["text"], rec["start"], rec["end"]
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(text)):
            raise ValueError(Errors.E331.format(path=path, lineno=lineno, start=start, end=end))
        fold = rec.get("fold")
        if fold is not None and (not isinstance(fold, int) or isinstance(fold, bool) or fold < 0):
            raise ValueError(Errors.E332.format(path=path, lineno=lineno, fold=fold))
        yield PreferencePair(
            doc_id=str(rec.get("doc_id", "")),
            text=text,
            start=start,
            end=end,
            gold_ids=tuple(rec.get("gold_ids", ())),
            chosen=rec["chosen"],
            rejected=rec["rejected"],
            chosen_rank=int(rec.get("chosen_rank", -1)),
            rejected_rank=int(rec.get("rejected_rank", -1)),
            source=rec.get("source"),
            prompt=rec.get("prompt"),
            fold=fold,
        )


def write_pairs(pairs: Sequence[PreferencePair], path: Union[str, Path]) -> Path:
    """Write pairs as JSONL atomically (temp file + rename)."""
    with atomic_open(path) as handle:
        for pair in pairs:
            handle.write(pair.to_json() + "\n")
    return Path(path)
