"""End-to-end scores of an NER + ``angel_linker`` pipeline against gold DocBin entities.

Three strict, micro-averaged precision / recall / F1 scores (span offsets must match exactly):

* ``ner``: predicted entity spans vs gold spans (labels ignored: one entity type per benchmark);
* ``e2e``: a prediction is correct when its span matches a gold span *and* its concept id
  (``span._.cui``) is one of that span's gold ids (composite/conjunct fields count any id,
  the ANGEL/BioSyn convention); a prediction the linker left NIL counts as a wrong prediction;
* ``linking_on_found``: accuracy of the linker on the spans the NER found correctly (separates
  linker errors from NER errors).

Beside them, ``nel`` holds spaCy's own ``nel_micro_p/r/f`` (``Scorer.score_links`` through the
linker's ``score``, what ``spacy evaluate`` prints); see :func:`spacy_link_scores` for where the
two definitions agree.

Ids on both sides go through ``KnowledgeBase.canonical_id`` when a KB is given, so a MEDIC
concept's OMIM and MeSH ids compare equal.

Usage: python scripts/e2e_score.py PIPELINE_DIR GOLD.spacy --output METRICS.json [--kb KB_DIR]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

Span3 = Tuple[int, int, int]  # (doc index, start char, end char)


def _prf(tp: int, n_pred: int, n_gold: int) -> Dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "tp": tp, "predicted": n_pred, "gold": n_gold}


def gold_ids(field: str) -> Set[str]:
    """Ids of a gold ``kb_id_`` field (``|`` composite, ``+`` conjunct), normalised like the KB."""
    from spacy_angel.kb.normalize import normalize_id

    return {normalize_id(t) for t in re.split(r"[|+]", field) if t.strip() and t.strip() != "-1"}


def score(
    gold: Sequence[Iterable[Tuple[int, int, Set[str]]]],
    predicted: Sequence[Iterable[Tuple[int, int, Optional[str]]]],
    canonical: Optional[Callable[[str], Optional[str]]] = None,
) -> Dict[str, Dict[str, float]]:
    """Scores from per-document gold ``(start, end, ids)`` and predicted ``(start, end, id or None)``."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold documents but {len(predicted)} predicted")
    canon = canonical or (lambda x: x)

    def norm(ids: Iterable[str]) -> Set[str]:
        return {canon(i) or i for i in ids}

    gold_spans: Dict[Span3, Set[str]] = {}
    pred_spans: Dict[Span3, Optional[str]] = {}
    for d, (g, p) in enumerate(zip(gold, predicted)):
        for start, end, ids in g:
            gold_spans.setdefault((d, start, end), set()).update(norm(ids))
        for start, end, cui in p:
            pred_spans[(d, start, end)] = None if cui is None else (canon(cui) or cui)
    found = [s for s in pred_spans if s in gold_spans]
    linked = [s for s in found if pred_spans[s] is not None and pred_spans[s] in gold_spans[s]]
    return {
        "ner": _prf(len(found), len(pred_spans), len(gold_spans)),
        "e2e": _prf(len(linked), len(pred_spans), len(gold_spans)),
        "linking_on_found": {"accuracy": round(len(linked) / len(found), 4) if found else 0.0, "n": len(found)},
    }


def score_docs(gold_docs: Sequence[Any], pred_docs: Sequence[Any], kb: Any = None) -> Dict[str, Dict[str, float]]:
    """:func:`score` on spaCy Docs: gold ids from ``ent.kb_id_``, predictions from ``ent._.cui``."""
    gold = [[(e.start_char, e.end_char, gold_ids(e.kb_id_)) for e in doc.ents] for doc in gold_docs]
    pred = [[(e.start_char, e.end_char, getattr(e._, "cui", None)) for e in doc.ents] for doc in pred_docs]
    return score(gold, pred, canonical=kb.canonical_id if kb is not None else None)


def spacy_link_scores(
    gold_docs: Sequence[Any], pred_docs: Sequence[Any], kb: Any = None, score: Optional[Callable[..., Dict[str, Any]]] = None
) -> Dict[str, float]:
    """spaCy's ``nel_micro_p/r/f`` for predicted ``kb_id_`` against gold entities.

    ``score`` is the linker's ``score`` method (default: ``angel_linker``'s scorer), so these are
    the numbers ``spacy evaluate`` prints. spaCy's count, like ``linking_on_found``, looks only at
    predicted spans at gold offsets and compares id strings; gold fields are normalised here as in
    :func:`score` (one id -> the KB's canonical id; no id, ``-1`` -> ``NIL``). Where gold fields
    hold one id each, ``nel_micro_r`` equals ``linking_on_found.accuracy``. They differ on purpose
    elsewhere: a composite gold field (``D1|D2``) never equals one predicted id in spaCy's count,
    and spaCy leaves NIL predictions out of precision (``e2e`` counts them as wrong).
    """
    from spacy.tokens import Span
    from spacy.training import Example

    from spacy_angel.pipeline.factories import angel_linker_score
    from spacy_angel.types import NIL

    canon = kb.canonical_id if kb is not None else (lambda x: x)
    examples = []
    for gold, pred in zip(gold_docs, pred_docs):
        ref = gold.copy()
        ents = []
        for ent in gold.ents:
            ids = gold_ids(ent.kb_id_)
            if not ids:
                kb_id = NIL
            elif len(ids) == 1:
                (only,) = ids
                kb_id = canon(only) or only
            else:
                kb_id = ent.kb_id_
            ents.append(Span(ref, ent.start, ent.end, label=ent.label_, kb_id=kb_id))
        ref.ents = ents
        examples.append(Example(pred, ref))
    scores = (score or angel_linker_score)(examples)
    return {key: round(scores[key], 4) for key in ("nel_micro_p", "nel_micro_r", "nel_micro_f")}


def first_missing(paths: Iterable[Optional[Path]]) -> Optional[Path]:
    """The first of ``paths`` that does not exist (None entries, options not given, are skipped)."""
    return next((p for p in paths if p is not None and not p.exists()), None)


def load_pipeline_and_gold(pipeline: Path, gold: Path) -> Tuple[Any, List[Any]]:
    """The saved pipeline and the gold DocBin's documents, read with its vocab."""
    import spacy
    from spacy.tokens import DocBin

    import spacy_angel.pipeline.linker_component  # noqa: F401  (registers the angel_linker factory)

    nlp = spacy.load(pipeline)
    return nlp, list(DocBin().from_disk(gold).get_docs(nlp.vocab))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", type=Path, help="spaCy pipeline directory (NER + angel_linker)")
    parser.add_argument("gold", type=Path, help="gold DocBin (from pubtator_to_docbin.py)")
    parser.add_argument("--output", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--kb", type=Path, help="KB directory for id canonicalisation (default: the linker's KB)")
    parser.add_argument("--batch-size", type=int, default=16, help="documents per nlp.pipe batch")
    args = parser.parse_args(argv)
    missing = first_missing((args.pipeline, args.gold))
    if missing is not None:
        print(f"error: {missing} does not exist", file=sys.stderr)
        return 1
    from spacy_angel.fileio import atomic_write_json
    from spacy_angel.kb.store import KnowledgeBase

    nlp, gold_docs = load_pipeline_and_gold(args.pipeline, args.gold)
    pred_docs = list(nlp.pipe((d.text for d in gold_docs), batch_size=args.batch_size))
    kb = KnowledgeBase.from_disk(args.kb) if args.kb else None
    if kb is None and "angel_linker" in nlp.pipe_names:
        kb = nlp.get_pipe("angel_linker").linker.kb
    metrics = score_docs(gold_docs, pred_docs, kb)
    linker_score = nlp.get_pipe("angel_linker").score if "angel_linker" in nlp.pipe_names else None
    metrics["nel"] = spacy_link_scores(gold_docs, pred_docs, kb, score=linker_score)
    metrics["documents"] = len(gold_docs)
    atomic_write_json(args.output, metrics, indent=1)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
