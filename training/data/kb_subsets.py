"""A KB minus some of its names: for held-out synonyms (the offline default), for cross-fitted
mining (each fold model must not read the surfaces only its held-out mentions have) and for
mining on KB names a positive model never read as mentions (:func:`sample_held_out_names`).

Why a room: the three callers need the same guarantee, that a removed name is neither trained on
nor decodable, while every concept keeps its ids (its gold mentions stay linkable through its
other names), aliases, preferred name and definition; and the two that choose names to hold out
need the same rule for which names may go (:func:`holdable_names`).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple, Union

from spacy_angel.errors import Errors
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.types import Mention

HELD_OUT_FILE = "held_out_kb_names.json"  # in a positive model's directory


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


def holdable_names(kb: KnowledgeBase, cid: str) -> List[str]:
    """Names of concept ``cid`` that may be held out while it stays linkable: never its preferred
    name (lacking one: its first name), never a name another concept shares (removing it from a
    KB would take that concept's name too); none for a single-name concept."""
    names = kb.names_for(cid)
    if len(names) < 2:
        return []
    preferred = kb.name_index(kb.preferred_name(cid) or "")
    keep = kb.names[preferred] if preferred is not None and kb.names[preferred] in names else names[0]
    return [n for n in names if n != keep and len(kb.ids_for(n)) == 1]


def sample_held_out_names(kb: KnowledgeBase, fraction: float, seed: int = 0) -> List[Tuple[str, str]]:
    """``(name, concept id)`` pairs held out of the KB-names-as-mentions examples, in KB order:
    each :func:`holdable_names` name is drawn with probability ``fraction`` (seeded; one draw per
    name of every multi-name concept, so a name's fate does not depend on which names are holdable)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(Errors.E324.format(fraction=fraction))
    rng = random.Random(seed)
    held: List[Tuple[str, str]] = []
    for cid in kb.concept_ids:
        names = kb.names_for(cid)
        holdable = set(holdable_names(kb, cid))
        for name in names if len(names) > 1 else ():
            if rng.random() < fraction and name in holdable:
                held.append((name, cid))
    return held


def held_out_record(held: List[Tuple[str, str]], fraction: float, seed: int) -> Dict[str, Any]:
    """What a positive model stores in :data:`HELD_OUT_FILE`."""
    return {"fraction": fraction, "seed": seed, "names": [{"name": n, "id": cid} for n, cid in held]}


def read_held_out_names(model_dir: Union[str, Path], kb: KnowledgeBase) -> Tuple[List[Mention], KnowledgeBase]:
    """The KB names a positive model never read as mentions, as bare mentions of their concept,
    and ``kb`` without them (decoding against it, the model cannot just copy its input)."""
    path = Path(model_dir) / HELD_OUT_FILE
    if not path.is_file():
        raise ValueError(Errors.E325.format(path=path))
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["names"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(Errors.E326.format(path=path, err=err)) from None
    mentions: List[Mention] = []
    for i, row in enumerate(rows):
        name, cid = (row.get("name"), row.get("id")) if isinstance(row, dict) else (None, None)
        if not isinstance(name, str) or not isinstance(cid, str):
            raise ValueError(Errors.E327.format(path=path, i=i))
        if cid not in kb or name not in kb.names_for(cid):
            raise ValueError(Errors.E328.format(path=path, i=i, name=name, cid=cid))
        mentions.append(Mention.bare(name, (cid,), doc_id=f"kb-name-{i}"))
    return mentions, without_names(kb, {m.surface for m in mentions})
