"""Nearest names to ranked concepts: what every nearest-name retriever's ``link`` does with its hits."""
from __future__ import annotations

from typing import List, Sequence, Set, Tuple

from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.types import Candidate


def concepts_from_hits(kb: KnowledgeBase, hits: Sequence[Tuple[int, float]], k: int) -> List[Candidate]:
    """Up to ``k`` candidates, score = the name's similarity. A name's ids already produced by a
    better-ranked name are dropped; a name whose ids are all taken is skipped."""
    seen: Set[str] = set()
    out: List[Candidate] = []
    for idx, score in hits:
        ids = tuple(i for i in kb.ids_for_index(idx) if i not in seen)
        if not ids:
            continue
        seen.update(ids)
        out.append(Candidate(kb_ids=ids, name=kb.names[idx], score=float(score)))
        if len(out) >= k:
            break
    return out
