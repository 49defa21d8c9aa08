"""A KB minus some of its names: for held-out synonyms (the offline default) and for cross-fitted
mining (each fold model must not read the surfaces only its held-out mentions have).

Why a room: both callers need the same guarantee, that a removed name is neither trained on nor
decodable, while every concept keeps its ids (its gold mentions stay linkable through its other
names), aliases, preferred name and definition.
"""
from __future__ import annotations

from typing import Set

from spacy_angel.kb import KnowledgeBase


def without_names(kb: KnowledgeBase, removed: Set[str]) -> KnowledgeBase:
    """A copy of ``kb`` minus the (normalised) names in ``removed``; concepts, ids, aliases,
    preferred names (unless removed) and definitions kept."""
    out = KnowledgeBase(lowercase=kb.lowercase)
    for cid in kb.concept_ids:
        preferred = kb.preferred_name(cid)
        definition = kb.definition(cid)
        types = kb.semantic_types(cid)
        if preferred and preferred.lower() not in removed:
            out.add(cid, preferred, definition=definition, semantic_types=types, preferred=True)
        else:
            out.add(cid, "", definition=definition, semantic_types=types)
        for name in kb.names_for(cid):
            if name not in removed:
                out.add(cid, name)
        aliases = kb.all_ids(cid)[1:]
        if aliases:
            out.add_alias_ids(cid, aliases)
    return out


__all__ = ["without_names"]
