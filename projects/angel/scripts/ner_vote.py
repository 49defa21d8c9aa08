"""Choose on dev whether the NER is one model or a vote of several seeds, and with how many votes.

Why a script of its own: issue 28 asks that every switch of the end-to-end pipeline be chosen on
dev with its dev figure. Each NER runs once over the dev texts; every ``min_votes`` from 1 to the
number of models is then scored on the same predictions (``spacy_angel.pipeline.ner_vote.vote_spans``,
what the ``angel_ner_vote`` component does), beside the first model alone. The chosen row is the
highest entity F1; a tie goes to the first model alone (the cheaper pipeline), then to fewer votes.
``assemble.py --voters ... --ner-vote FILE`` applies the choice.

Usage: python scripts/ner_vote.py DEV.spacy NER_MODEL [NER_MODEL ...] --output NER_VOTE.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from e2e_score import first_missing

SpanKeys = List[List[Any]]  # per document: (start, end, label) triples


def entity_scores(gold_docs: Sequence[Any], predicted: Sequence[SpanKeys], make_doc: Any) -> Dict[str, float]:
    """Exact-match entity P/R/F (spaCy's ``Scorer.score_spans``, as ``spacy train`` reports them); token
    offsets are the NER's, so the text is tokenised again with its ``make_doc``."""
    from spacy.scorer import Scorer
    from spacy.tokens import Span
    from spacy.training import Example

    examples = []
    for gold, spans in zip(gold_docs, predicted):
        doc = make_doc(gold.text)
        doc.ents = [Span(doc, start, end, label=label) for start, end, label in spans]
        examples.append(Example(doc, gold))
    scores = Scorer.score_spans(examples, "ents")
    return {key: round(100 * scores[f"ents_{key}"], 2) for key in ("p", "r", "f")}


def predict_spans(gold: Path, models: Sequence[Path]) -> Tuple[List[Any], List[List[SpanKeys]], Any]:
    """``(gold docs, each model's spans per doc, the first model's make_doc)``: each NER runs once over the
    gold texts. ``ValueError`` naming a model without an ``ner`` component."""
    import spacy
    from spacy.tokens import DocBin

    predicted: List[List[SpanKeys]] = []
    gold_docs: List[Any] = []
    make_doc = None
    for model in models:
        nlp = spacy.load(model)
        if "ner" not in nlp.pipe_names:
            raise ValueError(f"{model} has no 'ner' component (pipes: {nlp.pipe_names})")
        make_doc = make_doc or nlp.make_doc
        gold_docs = gold_docs or list(DocBin().from_disk(gold).get_docs(nlp.vocab))
        docs = nlp.pipe((doc.text for doc in gold_docs), batch_size=32)
        predicted.append([[(e.start, e.end, e.label_) for e in doc.ents] for doc in docs])
    return gold_docs, predicted, make_doc


def choose(rows: List[Dict[str, Any]]) -> Optional[int]:
    """``min_votes`` of the best row (None: the first model alone)."""
    best = max(rows, key=lambda r: (r["ents"]["f"], r["min_votes"] is None, -(r["min_votes"] or 0)))
    return best["min_votes"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gold", type=Path, help="gold DocBin of the DEV split (choosing on test would tune to it)")
    parser.add_argument("models", type=Path, nargs="+", help="spaCy NER pipelines; the first is the one used alone")
    parser.add_argument("--output", type=Path, required=True, help="JSON: every row's dev scores and the choice")
    args = parser.parse_args(argv)
    missing = first_missing((args.gold, *args.models))
    if missing is not None:
        print(f"error: {missing} does not exist", file=sys.stderr)
        return 1
    from spacy_angel.fileio import atomic_write_json
    from spacy_angel.pipeline.ner_vote import vote_spans

    try:
        gold_docs, predicted, make_doc = predict_spans(args.gold, args.models)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    rows = [{"min_votes": None, "ents": entity_scores(gold_docs, predicted[0], make_doc)}]
    for min_votes in range(1, len(args.models) + 1):
        voted = [vote_spans([model[d] for model in predicted], min_votes) for d in range(len(gold_docs))]
        rows.append({"min_votes": min_votes, "ents": entity_scores(gold_docs, voted, make_doc)})
    for number, model_spans in enumerate(predicted[1:], start=1):
        rows.append({"min_votes": None, "model": number, "ents": entity_scores(gold_docs, model_spans, make_doc)})
    candidates = [row for row in rows if "model" not in row]  # the other seeds alone are shown, not chosen
    report = {"gold": str(args.gold), "documents": len(gold_docs), "models": [str(m) for m in args.models],
              "rows": rows, "chosen": {"min_votes": choose(candidates)}}
    atomic_write_json(args.output, report, indent=1)
    print(json.dumps({"rows": [[row.get("model", row["min_votes"]), row["ents"]["f"]] for row in rows],
                      "chosen": report["chosen"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
