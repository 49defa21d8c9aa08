"""The spread of an NER vote over seeds: every model alone and every ``--size``-subset's majority vote.

Why: the workflow's vote of seeds 0-2 is one draw. Five seeds of the same recipe give ten triples;
their entity F1 on a split shows how much of a vote's gain is the vote and how much the draw. A spread
check, not a choice: run it on test only after dev has chosen (``projects/angel/scripts/ner_vote.py``).

Usage: python bench/ner_vote_spread.py GOLD.spacy NER_MODEL NER_MODEL ... [--size 3] --json OUT.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "projects" / "angel" / "scripts"))

from ner_vote import entity_scores, predict_spans  # noqa: E402  (the workflow's, so the figures compare)

from spacy_angel.fileio import atomic_write_json  # noqa: E402
from spacy_angel.pipeline.ner_vote import vote_spans  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gold", type=Path)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--size", type=int, default=3, help="models per vote (majority: more than half)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    gold, predicted, make_doc = predict_spans(args.gold, args.models)
    alone = {str(m): entity_scores(gold, spans, make_doc) for m, spans in zip(args.models, predicted)}
    majority = args.size // 2 + 1
    votes: Dict[str, Dict[str, float]] = {}
    for subset in itertools.combinations(range(len(args.models)), args.size):
        voted = [vote_spans([predicted[i][d] for i in subset], majority) for d in range(len(gold))]
        votes[",".join(map(str, subset))] = entity_scores(gold, voted, make_doc)
    f_alone = [s["f"] for s in alone.values()]
    f_votes = [s["f"] for s in votes.values()]
    report = {
        "command": "python bench/ner_vote_spread.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "gold": str(args.gold), "documents": len(gold), "size": args.size, "min_votes": majority,
        "alone": alone, "votes": votes,
        "summary": {"alone_median_f": round(statistics.median(f_alone), 2),
                    "alone_min_max_f": [min(f_alone), max(f_alone)],
                    "vote_median_f": round(statistics.median(f_votes), 2),
                    "vote_min_max_f": [min(f_votes), max(f_votes)]},
    }
    atomic_write_json(args.json, report, indent=1)
    print(json.dumps(report["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
