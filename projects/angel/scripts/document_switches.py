"""Choose the linker's document-level switches on dev: every combination of ``abbreviation_propagation``,
``one_sense_per_document`` and ``split_composite``, scored end to end on a gold DocBin.

Why a script of its own: issue 28 asks that each switch be on by default only where dev says so,
with its dev figure. The NER (and ``angel_abbreviations``) run once; each combination then relinks
copies of the same documents, so the rows differ only by the switches. The chosen combination is
the highest (span, id) F1; a tie goes to the combination with fewer switches on (the default is
off). ``assemble.py --switches FILE`` applies the choice.

Usage: python scripts/document_switches.py PIPELINE DEV.spacy --output SWITCHES.json [--kb KB_DIR]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from e2e_score import first_missing, load_pipeline_and_gold, score_docs

SWITCHES = ("abbreviation_propagation", "one_sense_per_document", "split_composite")


def choose(rows: List[Dict[str, Any]]) -> Dict[str, bool]:
    """The switches of the best row: highest e2e F1, then fewest switches on, then table order."""
    best = max(rows, key=lambda r: (r["e2e"]["f1"], -sum(r["switches"].values())))
    return dict(best["switches"])


def sweep(nlp: Any, gold_docs: Sequence[Any], kb: Any = None, batch_size: int = 16) -> List[Dict[str, Any]]:
    """One scored row per combination of :data:`SWITCHES` (the linker's ``cfg`` set, then restored)."""
    linker = nlp.get_pipe("angel_linker")
    with nlp.select_pipes(disable=["angel_linker"]):
        upstream = list(nlp.pipe((d.text for d in gold_docs), batch_size=batch_size))
    saved = {name: linker.cfg[name] for name in SWITCHES}
    rows = []
    try:
        for values in itertools.product((False, True), repeat=len(SWITCHES)):
            switches = dict(zip(SWITCHES, values))
            linker.cfg.update(switches)
            linked = list(linker.pipe((doc.copy() for doc in upstream), batch_size=batch_size))
            scores = score_docs(gold_docs, linked, kb)
            rows.append({"switches": switches, "e2e": scores["e2e"], "linking_on_found": scores["linking_on_found"]})
            print(json.dumps({**switches, "e2e_f1": scores["e2e"]["f1"]}), flush=True)
    finally:
        linker.cfg.update(saved)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", type=Path, help="spaCy pipeline directory (NER + angel_linker), e.g. from assemble.py")
    parser.add_argument("gold", type=Path, help="gold DocBin of the DEV split (choosing on test would tune to it)")
    parser.add_argument("--output", type=Path, required=True, help="JSON: every combination's dev scores and the chosen one")
    parser.add_argument("--kb", type=Path, help="KB directory for id canonicalisation (default: the linker's KB)")
    args = parser.parse_args(argv)
    missing = first_missing((args.pipeline, args.gold, args.kb))
    if missing is not None:
        print(f"error: {missing} does not exist", file=sys.stderr)
        return 1
    from spacy_angel.fileio import atomic_write_json
    from spacy_angel.kb.store import KnowledgeBase

    nlp, gold_docs = load_pipeline_and_gold(args.pipeline, args.gold)
    if "angel_linker" not in nlp.pipe_names:
        print(f"error: {args.pipeline} has no 'angel_linker' component (pipes: {nlp.pipe_names})", file=sys.stderr)
        return 1
    kb = KnowledgeBase.from_disk(args.kb) if args.kb else nlp.get_pipe("angel_linker").linker.kb
    rows = sweep(nlp, gold_docs, kb)
    report = {"gold": str(args.gold), "documents": len(gold_docs), "rows": rows, "chosen": choose(rows)}
    atomic_write_json(args.output, report, indent=1)
    print(json.dumps({"chosen": report["chosen"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
