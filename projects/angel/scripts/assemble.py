"""Assemble the end-to-end pipeline: a trained spaCy NER + the ``angel_linker`` component.

Why: NER and linker are trained separately (spaCy's trainer vs ``spacy-angel train``); the
deliverable is one directory that ``spacy.load`` restores, model + KB + trie included
(``nlp.to_disk`` serialises the linker's files, see ``spacy_angel.pipeline.linker_component``).

Usage: python scripts/assemble.py NER_MODEL LINKER_MODEL KB_DIR --output PIPELINE_DIR
       [--num-beams 5] [--top-k 5] [--threshold 0.0] [--batch-size 32] [--device auto]
       [--fusion FUSION_JSON] [--switches SWITCHES_JSON] [--voters NER_MODEL ... --ner-vote NER_VOTE_JSON]

``--fusion`` takes the weights ``spacy-angel train fuse ... --output FILE`` wrote, in place of
LINKER_MODEL/fusion.json; the pipeline keeps its own copy (``angel_linker/fusion``).

``--switches`` takes the document-level switches ``document_switches.py`` chose on dev (its
``chosen`` field: ``abbreviation_propagation``, ``one_sense_per_document``, ``split_composite``);
without it they stay at the component's defaults (off).

``--voters`` adds the NER of more pipelines (other seeds of the same recipe) and ``--ner-vote`` takes the
``min_votes`` that ``ner_vote.py`` chose on dev: the entities go to ``angel_ner_vote``
(:func:`spacy_angel.pipeline.ner_vote.add_ner_vote`). A choice of ``null`` keeps NER_MODEL alone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from e2e_score import first_missing

from spacy_angel.fileio import atomic_directory


def read_switches(path: Path) -> Dict[str, bool]:
    """The ``chosen`` switches of a ``document_switches.py`` report, checked by name and type."""
    from document_switches import SWITCHES

    try:
        chosen = json.loads(path.read_text(encoding="utf-8"))["chosen"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a document_switches.py report with a 'chosen' field ({err})") from None
    if not isinstance(chosen, dict) or set(chosen) != set(SWITCHES) or not all(isinstance(v, bool) for v in chosen.values()):
        raise ValueError(f"{path}: field 'chosen' must map each of {', '.join(SWITCHES)} to true or false, got {chosen!r}")
    return dict(chosen)


def read_min_votes(path: Path, voters: int) -> Optional[int]:
    """The ``chosen`` ``min_votes`` of a ``ner_vote.py`` report: null, or 1 to the number of NER models."""
    try:
        min_votes = json.loads(path.read_text(encoding="utf-8"))["chosen"]["min_votes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a ner_vote.py report with a 'chosen' field ({err})") from None
    if min_votes is not None and (isinstance(min_votes, bool) or not isinstance(min_votes, int)
                                  or not 1 <= min_votes <= voters + 1):
        raise ValueError(f"{path}: chosen min_votes must be null or 1 to {voters + 1} (the NER models), "
                         f"got {min_votes!r}")
    return min_votes


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ner", type=Path, help="spaCy pipeline with an 'ner' component (e.g. training/ner/model-best)")
    parser.add_argument("linker", help="ANGEL model directory or hub id")
    parser.add_argument("kb", type=Path, help="KB directory")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mode", default="hybrid", help="hybrid (fused with --fusion, else the model's fusion.json), beam or rerank")
    parser.add_argument("--fusion", type=Path, default=None, help="fusion weights file (train fuse --output) instead of LINKER_MODEL/fusion.json")
    parser.add_argument("--num-candidates", type=int, default=20, help="TF-IDF names per mention (hybrid, rerank)")
    parser.add_argument("--no-abbreviations", action="store_true", help="no angel_abbreviations before the linker")
    parser.add_argument("--switches", type=Path, default=None, help="document_switches.py output: its `chosen` switches go into the linker's config")
    parser.add_argument("--voters", type=Path, nargs="*", default=[], help="more NER pipelines that vote with NER (needs --ner-vote)")
    parser.add_argument("--ner-vote", type=Path, default=None,
                        help="ner_vote.py output: its chosen min_votes (null: NER alone)")
    args = parser.parse_args(argv)
    if bool(args.voters) != (args.ner_vote is not None):
        print("error: --voters and --ner-vote go together", file=sys.stderr)
        return 1
    missing = first_missing((args.ner, args.kb, args.fusion, args.switches, args.ner_vote, *args.voters))
    if missing is not None:
        print(f"error: {missing} does not exist", file=sys.stderr)
        return 1
    try:
        switches = read_switches(args.switches) if args.switches is not None else {}
        min_votes = read_min_votes(args.ner_vote, len(args.voters)) if args.ner_vote is not None else None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    import spacy

    import spacy_angel.pipeline.linker_component  # noqa: F401  (registers the factory)
    from spacy_angel.errors import FusionError

    nlp = spacy.load(args.ner)
    if "ner" not in nlp.pipe_names:
        print(f"error: {args.ner} has no 'ner' component (pipes: {nlp.pipe_names})", file=sys.stderr)
        return 1
    if min_votes is not None:
        from spacy_angel.pipeline.ner_vote import add_ner_vote

        voters = [spacy.load(path) for path in args.voters]
        for path, voter in zip(args.voters, voters):
            if "ner" not in voter.pipe_names:
                print(f"error: {path} (--voters) has no 'ner' component (pipes: {voter.pipe_names})", file=sys.stderr)
                return 1
        add_ner_vote(nlp, voters, min_votes)
    if not args.no_abbreviations:
        # Schwartz-Hearst definitions in each document: the linker then reads "DMD" as its long form,
        # as the training mentions were preprocessed (BioSyn / ANGEL protocol).
        nlp.add_pipe("angel_abbreviations")
    linker = nlp.add_pipe(
        "angel_linker",
        config={
            "num_beams": args.num_beams, "top_k": args.top_k, "threshold": args.threshold,
            "batch_size": args.batch_size, "device": args.device,
            "mode": args.mode, "num_candidates": args.num_candidates, **switches,
        },
    )
    # model and KB through initialize(), not the config: config.cfg keeps `model = null` and no
    # path of this machine ends up in `spacy package`'s output; to_disk saves the files themselves.
    try:
        linker.initialize(model=str(args.linker), kb=args.kb, fusion=args.fusion)
    except FusionError as err:  # a missing or bad --fusion file (or LINKER_MODEL/fusion.json), named
        print(f"error: {err}", file=sys.stderr)
        return 1
    with atomic_directory(args.output) as tmp:
        nlp.to_disk(tmp)
    print(f"pipeline {nlp.pipe_names} written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
