"""Fusion weights in a file of their own: ``train fuse --output FILE`` leaves the model directory as
it was, and ``--fusion FILE`` (``train evaluate``, ``spacy-angel link``, the component's
``initialize``, ``scripts/assemble.py``) links exactly as the same weights in ``MODEL/fusion.json``
did. A missing or bad file is refused with a numbered error naming it. Why: a weasel command must
not write into another command's output (``tests/project/test_project_outputs.py``).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import project_script
from spacy_angel.linking.fusion import FUSION_FILE, FusionWeights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# far from the defaults (model 0.5, tfidf 4.9, exact 1.2, beam 1.8): the beam's order alone
WEIGHTS = FusionWeights(model=2.0, tfidf=0.0, exact=0.0, beam=3.0, source="fitted")
DEV_ROWS = [("D001943", "breast cancer", "breast cancers"), ("D009203", "heart attack", "heart attacks"),
            ("D006973", "hypertension", "high blood pressure"), ("D003922", "juvenile diabetes", "juvenile diabetes"),
            ("D008175", "lung cancer", "cancer of the lung"), ("D008881", "migraine", "migraines")]
COMMON = ["--corpus-format", "askapatient", "--num-beams", "3", "--top-k", "3", "--device", "cpu"]


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture()
def dev(tmp_path) -> Path:
    path = tmp_path / "dev.txt"
    path.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in DEV_ROWS), encoding="utf-8")
    return path


@pytest.fixture()
def model(tmp_path, tiny_model_dir) -> Path:
    """A copy of the tiny model (the session's own is shared by every test)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def _train(*args: str):
    from training.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------------------- train fuse --output
def test_fuse_output_writes_only_the_file_and_the_default_still_writes_into_the_model(tmp_path, model, tiny_kb_dir, dev):
    before = _tree_hash(model)
    out = tmp_path / "weights" / "fusion-angel.json"
    out.parent.mkdir()
    res = _train("fuse", model, tiny_kb_dir, dev, "--output", out, *COMMON)
    assert res.exit_code == 0, res.output
    assert f"fusion weights -> {out}" in res.output
    assert _tree_hash(model) == before and not (model / FUSION_FILE).exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["fusion-angel.json"]  # no temp file, no lock left
    weights = FusionWeights.from_file(out)
    assert weights.dev["n"] == 6
    # without --output: MODEL/fusion.json, as before (the same fit)
    res = _train("fuse", model, tiny_kb_dir, dev, *COMMON)
    assert res.exit_code == 0, res.output
    assert FusionWeights.from_disk(model / FUSION_FILE) == weights


def test_fuse_ignores_a_broken_fusion_json_in_the_model(tmp_path, model, tiny_kb_dir, dev):
    """The weights being refitted play no part: a broken old file does not stop the refit."""
    (model / FUSION_FILE).write_text("{not json", encoding="utf-8")
    res = _train("fuse", model, tiny_kb_dir, dev, "--output", tmp_path / "w.json", *COMMON)
    assert res.exit_code == 0, res.output


def test_fuse_output_that_is_a_directory_is_refused_before_the_work(tmp_path, model, tiny_kb_dir, dev):
    res = _train("fuse", model, tiny_kb_dir, dev, "--output", tmp_path, *COMMON)
    assert res.exit_code == 1 and "--output" in res.output


# ---------------------------------------------------------------------------- evaluate --fusion
def _evaluate(model: Path, kb: Path, dev: Path, out: Path, *extra: str) -> dict:
    res = _train("evaluate", model, kb, dev, "-o", out, "--mode", "hybrid", "--num-candidates", "4", *COMMON, *extra)
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text(encoding="utf-8"))


def test_evaluate_fusion_file_equals_the_same_weights_in_the_model(tmp_path, model, tiny_kb_dir, dev):
    weights_file = WEIGHTS.to_file(tmp_path / "fusion-angel.json")
    separate = _evaluate(model, tiny_kb_dir, dev, tmp_path / "separate.json", "--fusion", str(weights_file))
    default = _evaluate(model, tiny_kb_dir, dev, tmp_path / "default.json")
    inside = tmp_path / "inside"
    shutil.copytree(model, inside)
    WEIGHTS.to_disk(inside)
    in_model = _evaluate(inside, tiny_kb_dir, dev, tmp_path / "in-model.json")
    assert separate["meta"]["fusion"] == in_model["meta"]["fusion"] == WEIGHTS.to_dict()
    assert separate["meta"]["fusion_file"] == str(weights_file) and in_model["meta"]["fusion_file"] is None
    assert separate["mentions"] == in_model["mentions"] and separate["summary"] == in_model["summary"]
    assert default["meta"]["fusion"]["source"] == "default"
    assert default["mentions"] != separate["mentions"]  # the weights do change the scores
    # the file wins over the model's own fusion.json
    FusionWeights(model=0.0, tfidf=1.0, exact=0.0, beam=0.0, source="fitted").to_disk(model)
    override = _evaluate(model, tiny_kb_dir, dev, tmp_path / "override.json", "--fusion", str(weights_file))
    assert override["mentions"] == separate["mentions"]


@pytest.mark.parametrize("content, code", [(None, "E420"), ("{not json", "E254"), ('{"bm25": 1.0}', "E250"),
                                           ('{"model": "NaN"}', "E252")])
def test_a_bad_fusion_file_is_refused_naming_it(tmp_path, model, tiny_kb_dir, dev, content, code):
    bad = tmp_path / "fusion-bad.json"
    if content is not None:
        bad.write_text(content, encoding="utf-8")
    res = _train("evaluate", model, tiny_kb_dir, dev, "-o", tmp_path / "r.json", "--fusion", bad, *COMMON)
    assert res.exit_code == 1
    assert f"[{code}]" in res.output and str(bad) in res.output
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------- link --fusion
def _link(model: Path, kb: Path, tmp_path: Path, name: str, *extra: str) -> list:
    from spacy_angel.apps.cli import app

    src = tmp_path / "mentions.jsonl"
    if not src.exists():
        src.write_text("".join(json.dumps({"id": i, "text": t, "start": 0, "end": len(t)}) + "\n"
                               for i, t in enumerate(("breast cancers", "heart attacks", "migraines"))), encoding="utf-8")
    out = tmp_path / name
    res = CliRunner().invoke(app, ["link", str(model), str(kb), str(src), "-o", str(out), "--num-beams", "3",
                                   "--top-k", "3", "--num-candidates", "4", "--device", "cpu", *extra])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_link_fusion_file_equals_the_same_weights_in_the_model(tmp_path, model, tiny_kb_dir):
    weights_file = WEIGHTS.to_file(tmp_path / "fusion.json.alone")
    separate = _link(model, tiny_kb_dir, tmp_path, "separate.jsonl", "--fusion", str(weights_file))
    default = _link(model, tiny_kb_dir, tmp_path, "default.jsonl")
    WEIGHTS.to_disk(model)
    assert _link(model, tiny_kb_dir, tmp_path, "in-model.jsonl") == separate != default


def test_link_missing_fusion_file_is_refused(tmp_path, model, tiny_kb_dir):
    from spacy_angel.apps.cli import app

    src = tmp_path / "m.jsonl"
    src.write_text('{"text": "migraines", "start": 0, "end": 9}\n', encoding="utf-8")
    res = CliRunner().invoke(app, ["link", str(model), str(tiny_kb_dir), str(src), "-o", str(tmp_path / "o.jsonl"),
                                   "--fusion", str(tmp_path / "nope.json"), "--device", "cpu"])
    assert res.exit_code == 1 and "[E420]" in res.output and str(tmp_path / "nope.json") in res.output


# ---------------------------------------------------------------------------- the component and assemble.py
def test_component_initialize_fusion_file_is_carried_inside_the_pipeline(tmp_path, model, tiny_kb_dir):
    import spacy

    from spacy_angel.errors import FusionError

    weights_file = WEIGHTS.to_file(tmp_path / "fusion-angel.json")
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("angel_linker", config={"device": "cpu", "num_beams": 3, "top_k": 3, "num_candidates": 4})
    linker.initialize(model=str(model), kb=tiny_kb_dir, fusion=weights_file)
    assert linker.linker.fusion == WEIGHTS
    nlp.to_disk(tmp_path / "pipe")
    weights_file.unlink()  # the pipeline is self-contained: its own copy of the weights
    loaded = spacy.load(tmp_path / "pipe").get_pipe("angel_linker").linker
    assert loaded.fusion.vector().tolist() == WEIGHTS.vector().tolist()
    assert "fusion-angel" not in (tmp_path / "pipe" / "config.cfg").read_text(encoding="utf-8")
    with pytest.raises(FusionError, match=r"\[E420\].*fusion-angel.json"):
        linker.initialize(model=str(model), kb=tiny_kb_dir, fusion=weights_file)


def test_assemble_script_takes_the_fusion_file(tmp_path, model, tiny_kb_dir):
    import spacy

    ner = spacy.blank("en")
    ner.add_pipe("ner")
    ner.initialize()
    ner.to_disk(tmp_path / "ner")
    weights_file = WEIGHTS.to_file(tmp_path / "fusion-angel.json")
    assemble = project_script("assemble")
    args = [str(tmp_path / "ner"), str(model), str(tiny_kb_dir), "--output", str(tmp_path / "pipeline"),
            "--num-beams", "3", "--top-k", "3", "--device", "cpu", "--num-candidates", "4"]
    assert assemble.main([*args, "--fusion", str(weights_file)]) == 0
    assert spacy.load(tmp_path / "pipeline").get_pipe("angel_linker").linker.fusion.vector().tolist() == WEIGHTS.vector().tolist()
    assert not (model / FUSION_FILE).exists()
    assert assemble.main([*args, "--fusion", str(tmp_path / "missing.json")]) == 1


def test_ray_shard_linker_links_with_the_given_weights(tmp_path, model, tiny_kb_dir):
    """``link --engine ray --fusion FILE``: each actor builds its linker with the file's weights."""
    pytest.importorskip("ray")
    from spacy_angel.apps.ray_linking import ShardLinker

    settings = dict(device="cpu", num_beams=3, batch_size=8, context_window=0, top_k=3, num_candidates=4)
    actor = ShardLinker(str(model), str(tiny_kb_dir), str(tmp_path / "out"), dict(settings, fusion=WEIGHTS.to_dict()))
    assert actor.linker.fusion == WEIGHTS
    assert ShardLinker(str(model), str(tiny_kb_dir), str(tmp_path / "out"), settings).linker.fusion.source == "default"


# ---------------------------------------------------------------------------- train name-encoder, then fuse
def test_name_encoder_command_adds_the_encoder_and_fuse_weights_its_feature(tmp_path, model, tiny_kb_dir, dev):
    """``train name-encoder MODEL KB --train corpus`` writes MODEL/name_encoder (the corpus surfaces join
    their concepts' synonym sets); the refitted fusion then has a ``dense`` weight; a missing model
    folder is refused before any work."""
    from spacy_angel.retrieval.name_encoder import ENCODER_DIR, NameEncoder

    args = ("--steps", "15", "--batch-size", "8", "--dim", "16", "--threads", "1", "--no-progress")
    res = _train("name-encoder", model, tiny_kb_dir, "--train", dev, "--corpus-format", "askapatient", *args)
    assert res.exit_code == 0, res.output
    assert "15 steps" in res.output and "train " in res.output  # the corpus was read and counted
    encoder = NameEncoder.from_disk(model / ENCODER_DIR)
    assert encoder.meta["extra_surfaces"] >= 1 and encoder.dim == 16
    res = _train("fuse", model, tiny_kb_dir, dev, *COMMON)
    assert res.exit_code == 0, res.output
    assert "dense" in json.loads((model / FUSION_FILE).read_text())
    res = _train("name-encoder", tmp_path / "nope", tiny_kb_dir, *args)
    assert res.exit_code == 1 and "[E388]" in res.output and not (tmp_path / "nope").exists()
