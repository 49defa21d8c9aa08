"""The CPU NER recipe (projects/angel/configs/ner_cpu.cfg) trains with its augmenter, as cpu-train-ner runs it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import spacy
from spacy.tokens import DocBin

CONFIG = Path(__file__).resolve().parents[2] / "projects" / "angel" / "configs" / "ner_cpu.cfg"

TEXTS = [
    ("Patients with breast cancer and cystic fibrosis were seen.", [(14, 27), (32, 47)]),
    ("Huntington disease is a neurodegenerative disorder.", [(0, 18), (24, 50)]),
    ("No disease was found in the control group.", []),
]


def _corpus(path: Path) -> Path:
    nlp = spacy.blank("en")
    docs = []
    for text, spans in TEXTS:
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(a, b, label="Disease") for a, b in spans]
        docs.append(doc)
    DocBin(docs=docs).to_disk(path)
    return path


def test_the_cpu_ner_recipe_trains_with_averaged_weights_and_mention_replacement(tmp_path: Path) -> None:
    config = spacy.util.load_config(CONFIG)
    assert config["training"]["optimizer"]["use_averages"] is True
    assert config["corpora"]["train"]["augmenter"]["@augmenters"] == "spacy_angel.mention_replacement.v1"
    corpus = _corpus(tmp_path / "tiny.spacy")
    out = tmp_path / "ner"
    proc = subprocess.run(
        [sys.executable, "-m", "spacy", "train", str(CONFIG), "--output", str(out), "--paths.train", str(corpus),
         "--paths.dev", str(corpus), "--training.max_steps", "6", "--training.eval_frequency", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "model-best" / "meta.json").read_text())
    assert "ents_f" in meta["performance"]
    assert spacy.load(out / "model-last")("Breast cancer.").text == "Breast cancer."
