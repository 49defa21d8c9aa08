"""The pipeline a kb-linker build ships: the optional KB-name entity ruler's patterns, the spaCy pipeline
(ruler + ``angel_linker`` on the chosen model) and how it is written beside the build without a moment
where a half-written pipeline loads."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from spacy_angel.fileio import atomic_directory
from spacy_angel.kb.store import KnowledgeBase


def ruler_patterns(kb: KnowledgeBase, keep: Optional[Set[str]], label: str, min_chars: int = 4) -> List[Dict[str, str]]:
    """Phrase patterns for spaCy's ``entity_ruler``: every name of a concept in ``keep`` (all when None).

    Names shorter than ``min_chars`` (``"ear"``, ``"pes"``) and names also used by a concept
    outside ``keep`` (for HPO: inheritance modes, onsets, frequencies) are left out, since they
    mostly match ordinary words. The ruler only *finds* spans; the linker decides the concept.
    """
    patterns: List[Dict[str, str]] = []
    for idx, name in enumerate(kb.names):
        ids = kb.ids_for_index(idx)
        if len(name) < min_chars or not ids or (keep is not None and any(i not in keep for i in ids)):
            continue
        patterns.append({"label": label, "pattern": name, "id": ids[0]})
    return patterns


def build_pipeline(model_dir: Path, kb_dir: Path, patterns: List[Dict[str, str]], num_beams: int = 5) -> Any:
    """Blank English + ``entity_ruler`` (case-insensitive KB phrases; none without patterns) + ``angel_linker``.

    The linker reads no context words (``context_window=0``): the model was trained on KB
    names alone, so the surrounding sentence would only be an input it has never seen.
    """
    import spacy

    import spacy_angel.pipeline.linker_component  # noqa: F401  (registers the factory without the entry point)

    nlp = spacy.blank("en")
    if patterns:
        ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "validate": False})
        ruler.add_patterns(patterns)
    config = {
        "model": str(model_dir), "kb": str(kb_dir), "num_beams": num_beams, "top_k": 3, "context_window": 0,
        "device": "cpu", "mode": "hybrid",  # fusion weights: the model directory's fusion.json (stage_fuse)
    }
    nlp.add_pipe("angel_linker", config=config)
    return nlp


def write_pipeline(nlp: Any, target: Path, beside_build: bool = False) -> None:
    """``nlp.to_disk`` so that a half-written pipeline never loads: into a temp sibling that replaces
    ``target`` whole. When ``target`` also holds the build (``kb-linker OUTPUT``), it cannot be
    replaced whole: the old ``config.cfg`` (what ``spacy.load`` reads first) is removed first, then each of
    the pipeline's entries is renamed in, ``config.cfg`` last. A run killed in between leaves no
    ``config.cfg``: ``spacy.load`` refuses the folder instead of loading old and new parts mixed, and the
    re-run (the pipeline stage is not yet recorded as done) writes it whole."""
    if not beside_build:
        with atomic_directory(target) as tmp:
            nlp.to_disk(tmp)
        return
    for left in target.glob(".pipeline-*"):  # a killed run's staging (the command holds OUTPUT's lock)
        shutil.rmtree(left, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".pipeline-") as tmp:
        nlp.to_disk(tmp)
        entries = sorted(Path(tmp).iterdir(), key=lambda p: p.name == "config.cfg")
        (target / "config.cfg").unlink(missing_ok=True)
        for entry in entries:
            dest = target / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(entry, dest)
