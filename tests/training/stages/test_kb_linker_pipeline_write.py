"""kb-linker writes its pipeline beside its build (training.stages.kb_linker_pipeline.write_pipeline): an
interrupted write must never leave a folder that spacy.load reads as a whole pipeline."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import spacy

from training.stages.kb_linker_pipeline import write_pipeline


def _pipeline(label: str):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": label, "pattern": "breast cancer"}])
    return nlp


def test_an_interrupted_write_beside_the_build_leaves_no_loadable_mix(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "state.json").write_text("{}")  # the build's own files stay
    write_pipeline(_pipeline("OLD"), target, beside_build=True)
    assert spacy.load(target)("breast cancer").ents[0].label_ == "OLD"
    real_replace, calls = os.replace, []

    def replace_then_die(src, dst):  # the second entry's rename never happens (a kill, a full disk)
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("interrupted")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(OSError):
        write_pipeline(_pipeline("NEW"), target, beside_build=True)
    monkeypatch.undo()
    assert not (target / "config.cfg").exists() and (target / "state.json").exists()
    with pytest.raises(OSError):
        spacy.load(target)  # refused, not old and new parts mixed
    write_pipeline(_pipeline("NEW"), target, beside_build=True)  # what the re-run does
    assert spacy.load(target)("breast cancer").ents[0].label_ == "NEW"
