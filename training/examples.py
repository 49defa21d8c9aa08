"""Token-level training examples that match the linker's decoding format exactly.

The decoder sees ``[start] + " mention is"`` (the prompt) and must continue with the KB name and
end-of-name, i.e. the same token sequence the trie holds. Training on anything else would teach
the model a format the constrained decoder never asks for, so every training stage (positive,
mining, preference) builds its inputs here from :meth:`AngelLinker.encode`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from spacy_angel.fileio import atomic_open, iter_jsonl
from spacy_angel.linker import AngelLinker
from spacy_angel.prompt import prompt_for, tokenize_name
from spacy_angel.types import Mention

IGNORE_INDEX = -100


def name_target(linker: AngelLinker, name: str) -> List[int]:
    """Token ids the decoder must produce after the prompt for ``name`` (name + end-of-name)."""
    return tokenize_name(linker.tokenizer, linker.normalize_text(name)) + [linker.tokenizer.eos_token_id]


def encode_text_inputs(linker: AngelLinker, source: str, prompt: str) -> Tuple[List[int], List[int]]:
    """(encoder ids, decoder prompt ids) for pre-formatted text, e.g. KB pre-training templates.

    The linker's own format (:meth:`spacy_angel.prompt.PromptFormat.encode_text`): ``<s> source
    </s>`` truncated to the model's input limit, and ``[decoder start] + " prompt"``.
    """
    return linker.prompt_format.encode_text(source, prompt)


def seq2seq_example(
    linker: AngelLinker, mention: Union[Mention, Tuple[str, str]], name: str
) -> Dict[str, List[int]]:
    """``input_ids`` / ``decoder_input_ids`` / ``labels`` for teacher forcing one (mention, name).

    ``mention`` is a :class:`Mention` or a pre-formatted ``(source, prompt)`` text pair.
    ``labels`` is aligned with ``decoder_input_ids`` (label j = the token after position j); the
    prompt is masked with -100 so only the name and end-of-name are learned.
    """
    if isinstance(mention, Mention):
        source, prompt = linker.encode(mention)
    else:
        source, prompt = encode_text_inputs(linker, *mention)
    target = name_target(linker, name)
    decoder_input_ids = list(prompt) + target[:-1]
    labels = [IGNORE_INDEX] * (len(prompt) - 1) + target
    return {"input_ids": list(source), "decoder_input_ids": decoder_input_ids, "labels": labels}


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
            raise ValueError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        text, start, end = rec["text"], rec["start"], rec["end"]
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(text)):
            raise ValueError(f"{path}:{lineno}: field start/end ({start}, {end}) outside the text")
        fold = rec.get("fold")
        if fold is not None and (not isinstance(fold, int) or isinstance(fold, bool) or fold < 0):
            raise ValueError(f"{path}:{lineno}: field fold ({fold!r}) is not a fold number")
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
