"""Held-out synonyms of any KB: the split a KB-only linker is chosen and scored on.

Why the split removes names from the KB: linking a held-out synonym must mean generating
*another* name of its concept (a synonym the model never saw), not copying one it was trained on
and that the trie would still allow.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from spacy_angel.errors import Errors
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.types import Mention
from training.data.kb_subsets import holdable_names, without_names


@dataclass
class SynonymSplit:
    """Held-out synonyms (bare mentions with their concept) and the KB without them."""

    train_kb: KnowledgeBase
    dev: List[Mention]
    test: List[Mention]


def split_synonyms(kb: KnowledgeBase, n_dev: int, n_test: int, seed: int = 0) -> SynonymSplit:
    """Hold out ``n_dev + n_test`` synonyms: one per concept at most, never the preferred name,
    never a name shared by two concepts, and only from concepts that keep another name."""
    rng = random.Random(seed)
    eligible: List[Tuple[str, str]] = []
    for cid in kb.concept_ids:
        options = holdable_names(kb, cid)
        if options:
            eligible.append((cid, rng.choice(sorted(options))))
    need = n_dev + n_test
    if len(eligible) < need:
        raise ValueError(Errors.E386.format(n=len(eligible), need=need))
    rng.shuffle(eligible)
    held = eligible[:need]
    removed = {name for _, name in held}
    mentions = [Mention.bare(name, (cid,), doc_id=f"heldout-{i}") for i, (cid, name) in enumerate(held)]
    return SynonymSplit(without_names(kb, removed), mentions[:n_dev], mentions[n_dev:])


def split_to_json(split: SynonymSplit) -> Dict[str, List[Dict[str, Any]]]:
    rows = lambda ms: [{"id": m.doc_id, "name": m.surface, "ids": list(m.gold_ids)} for m in ms]  # noqa: E731
    return {"dev": rows(split.dev), "test": rows(split.test)}


def split_from_json(data: Dict[str, List[Dict[str, Any]]]) -> Tuple[List[Mention], List[Mention]]:
    make = lambda rows: [Mention.bare(r["name"], tuple(r["ids"]), doc_id=r["id"]) for r in rows]  # noqa: E731
    return make(data["dev"]), make(data["test"])
