"""KB pre-training data (ANGEL Sec. 3.3 / GenBioEL style), streamed and chunked to scale to UMLS.

Each example teaches the model, from a KB name ``s1`` marked with plain-word markers, to
generate another name of the same concept::

    {"source":   "START s1 END has synonyms such as s2"   (or "START s END is defined as d"),
     "prompt":   "s1 is",
     "target":   <the TF-IDF-closest OTHER synonym of the concept>,
     "rejected": [<TF-IDF-closest names of OTHER concepts>],   # ANGEL negatives
     "kb_id":    <concept id>}

Choices (why):
* ``s2`` (the context synonym) is drawn from the concept's names other than ``s1`` and the
  target, so the input never contains the answer; with only two names there is no such
  synonym and the source is just ``"START s1 END"``.
* A definition yields one extra example anchored at the preferred name; its target is the
  closest other synonym, or the name itself for a single-name concept (the model still learns
  name <-> definition). A single-name concept without a definition yields nothing.
* Scale: concepts are processed ``chunk_size`` at a time; the target is picked from a
  per-concept (names x names) similarity block and negatives come from
  :meth:`NameIndex.nearest_names`, itself chunked, so memory is bounded by the chunk sizes and
  no n x n matrix ever exists. Only the concept order (a permutation of concept indices) is
  held for the whole KB.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import numpy as np

from spacy_angel.errors import Errors
from spacy_angel.fileio import atomic_open
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.tfidf import NameIndex
from spacy_angel.seq2seq.prompt import DEFAULT_END_MARKER, DEFAULT_START_MARKER, prompt_for

SYNONYM_TEMPLATE = "{start} {s1} {end} has synonyms such as {s2}"


DEFINITION_TEMPLATE = "{start} {s} {end} is defined as {d}"


BARE_TEMPLATE = "{start} {s1} {end}"


def _closest_other(index: NameIndex, idxs: List[int]) -> List[int]:
    """For each name of a concept, the position of its most similar OTHER name (ties: first)."""
    assert index.matrix is not None
    block = index.matrix[idxs]
    sims = np.asarray((block @ block.T).toarray(), dtype=np.float64)
    np.fill_diagonal(sims, -np.inf)
    # argmax returns the first maximum: deterministic tie-break on KB name order.
    return [int(j) for j in np.argmax(sims, axis=1)]


def iter_pretraining_examples(
    kb: KnowledgeBase,
    index: Optional[NameIndex] = None,
    *,
    num_negatives: int = 5,
    chunk_size: int = 1024,
    seed: int = 0,
    shuffle: bool = True,
    start_marker: str = DEFAULT_START_MARKER,
    end_marker: str = DEFAULT_END_MARKER,
    max_names_per_concept: Optional[int] = None,
    max_examples: Optional[int] = None,
    progress: Any = None,
) -> Iterator[Dict[str, Any]]:
    """Yield pre-training examples concept-chunk by concept-chunk (see module docstring).

    ``max_names_per_concept`` caps the synonym anchors per concept (UMLS has concepts with
    hundreds of names); ``progress`` is anything with ``.update(n_concepts)`` (e.g. tqdm).
    """
    if chunk_size <= 0:
        raise ValueError(Errors.E329)
    if index is None:
        index = NameIndex(kb).fit()
    rng = np.random.default_rng(seed)
    concept_ids = list(kb.concept_ids)
    order = rng.permutation(len(concept_ids)) if shuffle else np.arange(len(concept_ids))
    emitted = 0
    fmt = {"start": start_marker, "end": end_marker}

    for cs in range(0, len(order), chunk_size):
        pending: List[Dict[str, Any]] = []
        anchors: List[str] = []
        for pos in order[cs : cs + chunk_size]:
            kb_id = concept_ids[int(pos)]
            idxs = index._name_indices_for(kb_id)
            if not idxs:
                continue
            names = [kb.names[i] for i in idxs]
            definition = kb.definition(kb_id)
            definition = definition.strip() if definition else None
            if len(names) == 1 and not definition:
                continue
            closest = _closest_other(index, idxs) if len(names) > 1 else [0]

            if len(names) > 1:
                anchor_pos = list(range(len(names)))
                if max_names_per_concept is not None and len(anchor_pos) > max_names_per_concept:
                    anchor_pos = sorted(rng.choice(len(names), size=max_names_per_concept, replace=False).tolist())
                for a in anchor_pos:
                    t = closest[a]
                    others = [j for j in range(len(names)) if j != a and j != t]
                    if others:
                        s2 = names[others[int(rng.integers(len(others)))]]
                        source = SYNONYM_TEMPLATE.format(s1=names[a], s2=s2, **fmt)
                    else:
                        source = BARE_TEMPLATE.format(s1=names[a], **fmt)
                    pending.append(
                        {"source": source, "prompt": prompt_for(names[a]), "target": names[t], "kb_id": kb_id}
                    )
                    anchors.append(names[a])

            if definition:
                a = 0
                try:
                    pref = kb.preferred_name(kb_id)
                except (KeyError, ValueError):
                    pref = None
                pref_idx = kb.name_index(pref) if pref else None
                if pref_idx is not None and pref_idx in idxs:
                    a = idxs.index(pref_idx)
                target = names[closest[a]] if len(names) > 1 else names[a]
                pending.append(
                    {
                        "source": DEFINITION_TEMPLATE.format(s=names[a], d=definition, **fmt),
                        "prompt": prompt_for(names[a]),
                        "target": target,
                        "kb_id": kb_id,
                    }
                )
                anchors.append(names[a])

        if pending:
            if num_negatives > 0:
                hits = index.nearest_names(anchors, num_negatives, exclude_ids=[{ex["kb_id"]} for ex in pending])
            else:
                hits = [[] for _ in pending]
            for ex, h in zip(pending, hits):
                out = {
                    "source": ex["source"],
                    "prompt": ex["prompt"],
                    "target": ex["target"],
                    "rejected": [kb.names[i] for i, _ in h],
                    "kb_id": ex["kb_id"],
                }
                yield out
                emitted += 1
                if max_examples is not None and emitted >= max_examples:
                    if progress is not None:
                        progress.update(len(order[cs : cs + chunk_size]))
                    return
        if progress is not None:
            progress.update(len(order[cs : cs + chunk_size]))


def write_pretraining_data(
    kb: KnowledgeBase,
    path: Union[str, Path],
    max_examples: Optional[int] = None,
    seed: int = 0,
    chunk_size: int = 1024,
    index: Optional[NameIndex] = None,
    show_progress: bool = True,
    **kwargs: Any,
) -> int:
    """Stream examples to JSONL (temp file + ``os.replace``: atomic); returns the count written.

    Extra keyword arguments go to :func:`iter_pretraining_examples`.
    """
    from tqdm.auto import tqdm

    count = 0
    with atomic_open(path) as fh, tqdm(
        total=len(kb.concept_ids), unit="concept", desc="pretraining data", disable=not show_progress
    ) as bar:
        for ex in iter_pretraining_examples(
            kb, index, chunk_size=chunk_size, seed=seed, max_examples=max_examples, progress=bar, **kwargs
        ):
            fh.write(json.dumps(ex, ensure_ascii=False) + "\n")
            count += 1
    return count
