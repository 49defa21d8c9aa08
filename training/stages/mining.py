"""Negative mining (ANGEL stage 2): preference pairs from the model's own top-k mistakes.

The pair rule is a pure function on one ranking (:func:`select_pairs`) so it can be tested by
hand; :func:`mine_pairs` decodes training mentions with the constrained linker and applies it;
:func:`iterative_rounds` alternates mining and preference training on chunks of the data.

Rule (``strategy="angel"``, Kim et al. 2025), on the model's top-k *names* (beam outputs, one
entry per distinct KB name, best first; a name is "right" when any of its concept ids is a gold
id -- composite mentions: any of their ids):

1. every (right, wrong) pair where the wrong name is ranked above the right one;
2. if the top-1 name is right, it is paired with the best-ranked wrong name (if any);
3. if no right name is in the top-k, the TF-IDF-closest gold names (``fallback_chosen``, up to
   ``synonyms_k``) are the chosen side: the j-th wrong name (in rank order) is paired with
   ``fallback_chosen[j mod len(fallback_chosen)]`` -- exactly one pair per wrong name, so at most
   k pairs for such a mention.

Ablations: ``all`` -- every right x wrong pair in the top-k regardless of order (plus rule 3);
``top10`` -- the angel rule on a top-10 ranking; ``tfidf`` -- no model: the ranking is the
TF-IDF-nearest names of OTHER concepts (:meth:`NameIndex.nearest_names` excluding the gold
concepts) and every one of them is paired as in rule 3 with the gold names.

Pairs never repeat within a mention and never pair a name with itself. Ranks are 0-based
positions in the ranking; a fallback chosen name has rank -1.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

from spacy_angel.errors import Errors
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.linking.linker import AngelLinker
from spacy_angel.linking.result_cache import batches
from spacy_angel.retrieval.tfidf import NameIndex
from spacy_angel.types import Candidate, Mention
from training.examples.pair_files import PreferencePair
from training.settings import MiningSettings, resolve

logger = logging.getLogger(__name__)


STRATEGIES = ("angel", "all", "top10", "tfidf")


Pair = Tuple[str, str, int, int]  # (chosen name, rejected name, chosen rank, rejected rank)


PathLike = Union[str, Path]


# ---------------------------------------------------------------------------- the pair rule
def _fallback_pairs(fallback: Sequence[str], wrongs: Sequence[Tuple[int, str]]) -> List[Pair]:
    if not fallback:
        return []
    return [(fallback[j % len(fallback)], name, -1, rank) for j, (rank, name) in enumerate(wrongs)]


def select_pairs(
    ranked: Sequence[Any],
    gold_ids: Sequence[str],
    strategy: str = "angel",
    fallback_chosen: Sequence[str] = (),
    canon: Optional[Callable[[str], str]] = None,
) -> List[Pair]:
    """(chosen, rejected, chosen_rank, rejected_rank) pairs for one mention (rule: module doc).

    ``ranked``: candidates best first, each with ``.kb_ids`` and ``.name``; ``canon`` maps ids
    to a canonical form before comparing with ``gold_ids`` (e.g. ``kb.canonical_id``).
    """
    if strategy not in STRATEGIES:
        raise ValueError(Errors.E303.format(strategy=strategy, choices=", ".join(STRATEGIES)))
    norm = canon or (lambda x: x)
    gold: Set[str] = {norm(g) for g in gold_ids}
    entries: List[Tuple[int, str, bool]] = []
    seen: Set[str] = set()
    for rank, cand in enumerate(ranked):
        if cand.name in seen:
            continue  # a repeated name keeps its best rank
        seen.add(cand.name)
        entries.append((rank, cand.name, any(norm(i) in gold for i in cand.kb_ids)))
    rights = [(r, n) for r, n, ok in entries if ok]
    wrongs = [(r, n) for r, n, ok in entries if not ok]
    wrong_names = {n for _, n in wrongs}
    fallback = [n for n in dict.fromkeys(fallback_chosen) if n not in wrong_names]

    if strategy == "tfidf" or not rights:
        pairs = _fallback_pairs(fallback, wrongs)
    elif strategy == "all":
        pairs = [(c, w, rc, rw) for rc, c in rights for rw, w in wrongs]
    else:  # angel, top10
        pairs = [(c, w, rc, rw) for rc, c in rights for rw, w in wrongs if rw < rc]
        if entries and entries[0][2] and wrongs:
            top_rank, top_name, _ = entries[0]
            pairs.insert(0, (top_name, wrongs[0][1], top_rank, wrongs[0][0]))
    out: List[Pair] = []
    done: Set[Tuple[str, str]] = set()
    for pair in pairs:
        key = (pair[0], pair[1])
        if pair[0] != pair[1] and key not in done:
            done.add(key)
            out.append(pair)
    return out


# ---------------------------------------------------------------------------- helpers
def canonicalizer(kb: KnowledgeBase) -> Callable[[str], str]:
    """``kb.canonical_id`` that leaves unknown ids as they are (retired gold ids stay comparable)."""

    def canon(kb_id: str) -> str:
        try:
            cid = kb.canonical_id(kb_id)
        except (KeyError, ValueError):
            return kb_id
        return cid or kb_id

    return canon


def closest_gold_names(index: NameIndex, mention: str, gold_ids: Sequence[str], k: int = 3) -> List[str]:
    """The ``k`` names of the gold concept(s) most TF-IDF-similar to ``mention`` (best first)."""
    names = [name for _, name in index.top_names_for_concepts(mention, gold_ids, k=k)]
    if len(gold_ids) > 1 and len(names) > 1:
        sims = index.similarity([mention] * len(names), names)
        names = [names[j] for j in sorted(range(len(names)), key=lambda j: (-sims[j], j))]
    return names[:k]


def name_rankings(linker: AngelLinker, mentions: Sequence[Mention], top_k: int, progress: bool = False) -> List[List[Candidate]]:
    """Top-k distinct KB *names* per mention from constrained beam search, best first.

    Unlike :meth:`AngelLinker.link` (one entry per concept), several names of one concept may
    appear: ANGEL pairs beam outputs, and a gold synonym ranked below a wrong name is a pair.
    Uses the linker's batched decoder; identical inputs are decoded once.
    """
    encoded = [linker.encode(m) for m in mentions]
    unique = sorted(set(encoded), key=lambda key: (len(key[0]), len(key[1])))
    results: Dict[Tuple[Tuple[int, ...], Tuple[int, ...]], List[Candidate]] = {}
    kb = linker.kb
    for chunk in batches(unique, linker.batch_size, "mining", progress):
        for key, ranked in zip(chunk, linker.decoder.beam_search(chunk)):
            results[key] = [Candidate(tuple(kb.ids_for_index(i)), kb.names[i], float(s)) for i, s in ranked[:top_k]]
    return [results[key] for key in encoded]


def tfidf_rankings(index: NameIndex, mentions: Sequence[Mention], top_k: int) -> List[List[Candidate]]:
    """TF-IDF-nearest names of concepts other than the gold ones, per mention (the tfidf ablation)."""
    hits = index.nearest_names([m.surface for m in mentions], top_k, exclude_ids=[set(m.gold_ids) for m in mentions])
    kb = index.kb
    return [[Candidate(tuple(kb.ids_for_index(i)), kb.names[i], float(s)) for i, s in row] for row in hits]


def _pair_kind(pair: Pair) -> str:
    chosen_rank, rejected_rank = pair[2], pair[3]
    if chosen_rank < 0:
        return "fallback"
    if chosen_rank == 0:
        return "top1_vs_best_wrong"
    return "misordered" if rejected_rank < chosen_rank else "ordered"


# ---------------------------------------------------------------------------- mining
def mine_pairs(
    model_dir: PathLike,
    kb: KnowledgeBase,
    mentions: Sequence[Mention],
    settings: Optional[MiningSettings] = None,
    *,
    index: Optional[NameIndex] = None,
    linker: Optional[AngelLinker] = None,
    **overrides: Any,
) -> Tuple[List[PreferencePair], Dict[str, Any]]:
    """Decode ``mentions`` with the model and turn its rankings into preference pairs.

    ``settings`` (:class:`MiningSettings`; keyword ``overrides`` of its fields still work).
    ``top10`` decodes a top-10 (``num_beams`` >= 10); other strategies use ``top_k`` with
    ``num_beams = max(num_beams or top_k, top_k)``. ``tfidf`` does not load the model.
    Returns the pairs and counts (mentions, top-1 accuracy on them, pairs by kind, ...).
    """
    s = resolve(MiningSettings, settings, overrides)
    strategy, top_k = s.strategy, s.top_k
    if strategy not in STRATEGIES:
        raise ValueError(Errors.E303.format(strategy=strategy, choices=", ".join(STRATEGIES)))
    if top_k < 1:
        raise ValueError(Errors.E356)
    started = time.time()
    if strategy == "top10":
        top_k = max(top_k, 10)
    beams = max(s.num_beams or top_k, top_k)
    usable = [m for m in mentions if any(g in kb for g in m.gold_ids)]
    index = index if index is not None else NameIndex(kb).fit()
    canon = canonicalizer(kb)
    if strategy == "tfidf":
        rankings = tfidf_rankings(index, usable, top_k)
    else:
        if linker is None:
            linker = AngelLinker.from_pretrained(
                model_dir, kb, device=s.device, num_beams=beams, batch_size=s.batch_size, context_window=s.context_window
            )
        elif linker.num_beams < top_k:
            raise ValueError(Errors.E357.format(beams=linker.num_beams, top_k=top_k))
        rankings = name_rankings(linker, usable, top_k, progress=s.progress)

    pairs: List[PreferencePair] = []
    kinds: Dict[str, int] = {}
    stats: Dict[str, Any] = {
        "strategy": strategy,
        "top_k": top_k,
        "num_beams": beams if strategy != "tfidf" else None,
        "mentions": len(mentions),
        "mentions_not_in_kb": len(mentions) - len(usable),
        "top1_correct": 0,
        "right_in_top_k": 0,
        "no_right_in_top_k": 0,
        "mentions_with_pairs": 0,
    }
    for m, ranking in zip(usable, rankings):
        gold_in_kb = [g for g in m.gold_ids if g in kb]
        gold = {canon(g) for g in m.gold_ids}
        right = [any(canon(i) in gold for i in c.kb_ids) for c in ranking]
        if strategy != "tfidf":
            stats["top1_correct"] += int(bool(right) and right[0])
            stats["right_in_top_k"] += int(any(right))
            stats["no_right_in_top_k"] += int(not any(right))
        fallback = closest_gold_names(index, m.surface, gold_in_kb, s.synonyms_k)
        selected = select_pairs(ranking, m.gold_ids, strategy, fallback, canon=canon)
        stats["mentions_with_pairs"] += int(bool(selected))
        for chosen, rejected, rc, rr in selected:
            kind = _pair_kind((chosen, rejected, rc, rr))
            kinds[kind] = kinds.get(kind, 0) + 1
            pairs.append(
                PreferencePair(
                    doc_id=m.doc_id,
                    text=m.text,
                    start=m.start,
                    end=m.end,
                    gold_ids=tuple(m.gold_ids),
                    chosen=chosen,
                    rejected=rejected,
                    chosen_rank=rc,
                    rejected_rank=rr,
                )
            )
    stats["pairs"] = len(pairs)
    stats["pairs_by_kind"] = kinds
    if strategy != "tfidf":
        stats["acc@1"] = stats["top1_correct"] / len(usable) if usable else 0.0
    stats["seconds"] = round(time.time() - started, 2)
    return pairs, stats
