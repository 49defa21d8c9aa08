"""The JSONL record format of ``spacy-angel link``: records in, mentions out, links back in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from spacy_angel.errors import Errors
from spacy_angel.fileio import iter_jsonl
from spacy_angel.types import Candidate, Mention


def mentions_from_record(rec: dict, where: str, default_id: object) -> List[Mention]:
    """The mentions of one ``link`` input record (``{"id", "text", "spans": [{"start", "end"}]}`` or
    ``{"id", "text", "start", "end"}``; ``id`` defaults to ``default_id``, the line number).

    One copy of the record rules for both engines (``--engine ray`` reads shards with it); a bad
    record raises ValueError naming ``where``."""
    text = rec.get("text")
    if not isinstance(text, str):
        raise ValueError(Errors.E266.format(where=where))
    doc_id = str(rec["id"] if rec.get("id") is not None else default_id)
    spans = rec.get("spans")
    if spans is None:  # Parquet rows carry both columns, null where unused
        spans = [rec] if rec.get("start") is not None else []
    mentions = []
    for span in spans:
        start, end = span.get("start"), span.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            raise ValueError(Errors.E267.format(where=where, start=start, end=end))
        mentions.append(Mention(doc_id, text, start, end))
    return mentions


def link_record(mention: Mention, candidates: Sequence[Candidate]) -> dict:
    """One output line of ``link`` (both engines write exactly this)."""
    return {
        "id": mention.doc_id,
        "start": mention.start,
        "end": mention.end,
        "mention": mention.surface,
        "candidates": [{"ids": list(c.kb_ids), "name": c.name, "score": c.probability} for c in candidates],
    }


def read_link_input(path: Path, nlp_name: Optional[str]) -> Iterator[Mention]:
    """Mentions from JSONL spans (see :func:`mentions_from_record`) or from plain text (one document
    per line) run through the spaCy pipeline ``nlp_name``. A bad record raises ValueError naming it."""
    if path.suffix in (".jsonl", ".json"):
        yield from [m for lineno, rec in iter_jsonl(path) for m in mentions_from_record(rec, f"{path}:{lineno}", lineno)]
        return
    if nlp_name is None:
        raise ValueError(Errors.E118.format(path=path))
    import spacy

    nlp = spacy.load(nlp_name)
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, doc in enumerate(nlp.pipe(lines), 1):
        for ent in doc.ents:
            yield Mention(str(lineno), doc.text, ent.start_char, ent.end_char)
