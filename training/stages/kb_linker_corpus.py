"""Annotated mentions a kb-linker user may add (``--corpus``, ``--dev``): how the corpus words the KB's
concepts, and a dev set of the user's own text to choose on.

Why the held-out synonyms stay the test: they are the one set every KB has, so the report stays
comparable across vocabularies. A training mention whose surface is a held-out synonym is dropped
(it would teach the test answer), and said so in the build's state.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from spacy_angel.kb.normalize import normalize_name
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.types import Mention


def sources_digest(sources: Sequence[Path]) -> str:
    """SHA-256 of the KB sources: a changed KB is a new build. One file: its bytes (the HPO default's
    cache key since it was built on ``hp.obo``); a directory or several files: each name and its bytes."""
    paths = [Path(p) for p in sources]
    files = [f for p in paths for f in (sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])]
    digest = hashlib.sha256()
    for path in files:
        if len(paths) > 1 or paths[0].is_dir():
            digest.update(path.name.encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class UserCorpus:
    """``train``: mentions the positive stage and the name encoder learn from; ``dev``: mentions the
    DPO choice and the fusion weights are chosen on, instead of the held-out synonyms' dev split."""

    train: Optional[Path] = None
    dev: Optional[Path] = None
    format: str = "auto"

    @property
    def given(self) -> bool:
        return self.train is not None or self.dev is not None

    def digest(self) -> str:
        """What keys the build besides the KB: each given file's role, format and bytes ('' when none)."""
        if not self.given:
            return ""
        parts = [f"{role}:{self.format}:{sources_digest([path])}" for role, path in (("train", self.train), ("dev", self.dev))
                 if path is not None]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def mentions(self, which: str, kb: KnowledgeBase, held_out: Set[str] = frozenset()) -> Tuple[List[Mention], Dict[str, Any]]:
        """The ``train`` or ``dev`` mentions, read and preprocessed against ``kb`` (ids it lacks removed,
        mentions left without ids dropped); ``held_out``: normalised surfaces never to train on."""
        from training.data.corpora import read_corpus
        from training.data.preprocess import preprocess

        path = self.train if which == "train" else self.dev
        if path is None:
            return [], {}
        kept, report = preprocess(read_corpus(path, format=self.format), lowercase=True, expand_abbreviations=True, kb=kb)
        mentions = [m for m in kept if normalize_name(m.surface) not in held_out]
        return mentions, {"path": str(path), "mentions": len(mentions), "held_out_surfaces_dropped": len(kept) - len(mentions),
                          "preprocess": report.to_dict()}
