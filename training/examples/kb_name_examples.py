"""Training examples made from a KB's names alone: copy examples and TF-IDF preference pairs.

Why: a vocabulary without annotated mentions still teaches the model two things, that a name it
knows can be written back (copy examples) and which name of *another* concept it must not prefer
(pairs whose rejected name is the TF-IDF-closest name of another concept).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, List, Tuple

from spacy_angel.fileio import atomic_open
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.seq2seq.prompt import PromptFormat
from spacy_angel.types import Mention


def copy_examples_file(kb: KnowledgeBase, path: Path, tokenizer: Any, copies: bool = True, synonym_targets: int = 0) -> Path:
    """Copy examples (each name -> itself) and, with ``synonym_targets``, synonym examples (each name
    -> up to that many *other* names of its concept, in KB order) as pre-formatted JSONL for
    ``train_positive``.

    Why synonym examples: the positive stage teaches each name its single TF-IDF-closest synonym,
    which is often a spelling variant; a held-out synonym needs the model to have learnt how whole
    names vary ("renal" for "kidney"), which the other names of a concept show.

    Written as text records rather than bare mentions because ``train_positive`` would rank
    every mention's concept names with TF-IDF first (about a minute for HPO), only to find the
    name itself. The text is the runtime's own format (:class:`spacy_angel.seq2seq.prompt.PromptFormat`
    of a bare mention), so the token ids are those of a bare mention of the name.
    """
    fmt = PromptFormat(tokenizer, context_window=0)

    def record(name: str, target: str) -> str:
        mention = Mention.bare(name, ())
        rec = {"source": fmt.source_text(mention), "prompt": fmt.prompt_text(mention), "target": target}
        return json.dumps(rec, ensure_ascii=False) + "\n"

    with atomic_open(path) as handle:
        if copies:
            for name in kb.names:
                handle.write(record(name, name))
        if synonym_targets > 0:
            for cid in kb.concept_ids:
                names = kb.names_for(cid)
                for name in names:
                    for other in [n for n in names if n != name][:synonym_targets]:
                        handle.write(record(name, other))
    return path


def tfidf_pairs(kb: KnowledgeBase, index: Any, count: int, negatives: int, seed: int) -> List[Any]:
    """DPO pairs from KB names: chosen = the TF-IDF-closest other name of the same concept (the
    positive stage's target), rejected = the TF-IDF-closest names of *other* concepts."""
    from training.examples.pair_files import PreferencePair

    rng = random.Random(seed)
    # every name of a concept with two or more names is an anchor (its two closest names of the concept
    # always hold another one), so shuffle them first and find the chosen name of the kept ones only:
    # the same pairs as finding it for all, but not a million TF-IDF look-ups at a million names
    candidates: List[Tuple[str, str]] = [(cid, name) for cid in kb.concept_ids for names in [kb.names_for(cid)]
                                         if len(names) >= 2 for name in names]
    rng.shuffle(candidates)
    anchors: List[Tuple[str, str, str]] = []
    for cid, name in candidates[: max(1, math.ceil(count / max(1, negatives)))]:
        chosen = [n for n in index.top_names_for_concept(name, cid, k=2) if n != name]
        anchors.append((cid, name, chosen[0]))
    hits = index.nearest_names([a[1] for a in anchors], negatives, exclude_ids=[{a[0]} for a in anchors])
    pairs = []
    for (cid, name, chosen), found in zip(anchors, hits):
        for idx, _ in found:
            rejected = kb.names[idx]
            if rejected != chosen:
                pairs.append(PreferencePair("", name, 0, len(name), (cid,), chosen, rejected))
    return pairs[:count]
