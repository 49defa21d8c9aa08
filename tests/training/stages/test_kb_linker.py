"""``spacy-angel train kb-linker`` on the tiny KB: the split, the output pipeline, resume after a kill,
the DPO rule, and the inputs it refuses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import spacy
from safetensors.torch import load_file
from typer.testing import CliRunner

from spacy_angel.apps.cli import get_app
from spacy_angel.kb.store import KnowledgeBase
from training.data.synonym_split import split_synonyms
from training.stages import kb_linker
from training.stages.kb_linker_corpus import UserCorpus
from training.stages.kb_linker_recipe import Recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_RUN = ["--positive-steps", "6", "--dpo-steps", "2", "--encoder-steps", "20", "--threads", "1"]


def _invoke(*args):
    return CliRunner().invoke(get_app(), ["train", "kb-linker", *map(str, args)])


@pytest.fixture(scope="module")
def built(tiny_kb_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("kbl") / "out"
    result = _invoke(tiny_kb_dir, out, *TINY_RUN)
    assert result.exit_code == 0, result.output
    return out


def test_the_split_never_holds_out_a_concepts_only_name():
    kb = KnowledgeBase()
    for i in range(40):
        kb.add(f"C{i}", f"concept {i} preferred")
        if i % 2:  # every other concept has a synonym; the rest have one name only
            kb.add(f"C{i}", f"concept {i} synonym")
    kb.add("C1", "shared name")
    kb.add("C3", "shared name")  # a name two concepts share is never held out either
    split = split_synonyms(kb, n_dev=4, n_test=6, seed=3)
    held = split.dev + split.test
    assert len(held) == 10 and len({m.gold_ids for m in held}) == 10  # one name per concept at most
    for m in held:
        (cid,) = m.gold_ids
        assert int(cid[1:]) % 2 == 1 and m.surface != "shared name"
        assert split.train_kb.names_for(cid) and m.surface not in split.train_kb.names_for(cid)
    assert split.train_kb.num_names == kb.num_names - 10


def test_output_is_a_pipeline_that_links_kb_ids_also_without_the_ruler(built, tiny_kb):
    nlp = spacy.load(built)
    assert nlp.pipe_names == ["entity_ruler", "angel_linker"]
    doc = nlp("Patients with breast carcinoma and high blood pressure were seen.")
    assert [e.text for e in doc.ents] == ["breast carcinoma", "high blood pressure"]
    assert all(e.kb_id_ in tiny_kb.concept_ids for e in doc.ents)
    linker = nlp.get_pipe("angel_linker")  # alone, on entities a user's own NER set
    doc = nlp.make_doc("a case of mammary cancer")
    doc.ents = [doc.char_span(10, 24, label="DISEASE")]
    assert linker(doc).ents[0].kb_id_ in tiny_kb.concept_ids
    report = json.loads((built / kb_linker.REPORT_FILE).read_text())
    assert {"n", "tfidf_acc1", "beam_acc1", "hybrid_acc1", "seconds", "peak_rss_mb"} <= set(report)
    assert "| hybrid (shipped) |" in (built / kb_linker.CARD_FILE).read_text()


def test_a_finished_output_is_reused_not_rebuilt(built, tiny_kb_dir):
    before = (built / "build" / kb_linker.STATE_FILE).read_text()
    result = _invoke(tiny_kb_dir, built, *TINY_RUN)
    assert result.exit_code == 0, result.output
    assert (built / "build" / kb_linker.STATE_FILE).read_text() == before


def test_a_killed_build_resumes_to_the_same_model(built, tiny_kb_dir, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "spacy_angel.apps.cli", "train", "kb-linker", str(tiny_kb_dir), str(out), *TINY_RUN]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "build" / kb_linker.STATE_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and "positive" in json.loads(state.read_text() or "{}").get("stages", {}):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / kb_linker.REPORT_FILE).exists()
    result = _invoke(tiny_kb_dir, out, *TINY_RUN)
    assert result.exit_code == 0, result.output
    for model in ("positive", "dpo"):
        a, b = load_file(str(built / "build" / model / "model.safetensors")), load_file(str(out / "build" / model / "model.safetensors"))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), model
    keep = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "peak_rss_mb")}  # noqa: E731
    assert keep(json.loads((out / kb_linker.REPORT_FILE).read_text())) == keep(json.loads((built / kb_linker.REPORT_FILE).read_text()))


def test_a_dpo_stage_that_lowers_dev_is_not_shipped(tiny_kb_dir, tiny_kb, tmp_path, monkeypatch):
    real = kb_linker.heldout_accuracy

    def dpo_worse(model_dir, kb, mentions, recipe):
        acc = real(model_dir, kb, mentions, recipe)
        if Path(model_dir).name == "dpo":
            acc = {**acc, "acc1": acc["acc1"] - 0.5}  # dev and test alike: the rule reads dev only
        return acc

    monkeypatch.setattr(kb_linker, "heldout_accuracy", dpo_worse)
    recipe = Recipe.for_kb(tiny_kb, positive_steps=6, dpo_steps=2, threads=1)
    kb_linker.run_kb_linker(tiny_kb_dir, tmp_path / "out", recipe)
    report = json.loads((tmp_path / "out" / kb_linker.REPORT_FILE).read_text())
    assert report["model"] == "positive" and report["dev"]["dpo"] < report["dev"]["positive"]
    state = json.loads((tmp_path / "out" / "build" / kb_linker.STATE_FILE).read_text())
    assert state["stages"]["pipeline"]["model"] == state["stages"]["fuse"]["model"] == "positive"


def test_inputs_it_cannot_use_are_refused_before_any_work(tiny_kb_dir, tmp_path):
    single = tmp_path / "single.tsv"
    single.write_text("".join(f"D{i}\tname {i}\n" for i in range(30)), encoding="utf-8")
    result = _invoke(single, tmp_path / "a")
    assert result.exit_code == 1 and "[E393]" in result.output and "0 of 30" in result.output
    assert not (tmp_path / "a").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    result = _invoke(tiny_kb_dir, mine)
    assert result.exit_code == 1 and "[E113]" in result.output
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    result = _invoke(tiny_kb_dir, tmp_path / "afile" / "out")
    assert result.exit_code == 1 and ("[E401]" in result.output or "[E394]" in result.output)


def test_synonym_examples_pair_each_name_with_other_names_of_its_concept(tiny_kb, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from training.examples.kb_name_examples import copy_examples_file

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    path = copy_examples_file(tiny_kb, tmp_path / "ex.jsonl", tokenizer, copies=False, synonym_targets=2)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    expected = sum(min(2, len(tiny_kb.names_for(c)) - 1) for c in tiny_kb.concept_ids for _ in tiny_kb.names_for(c))
    assert len(records) == expected
    for rec in records:
        (cid,) = [c for c in tiny_kb.concept_ids if rec["target"] in tiny_kb.names_for(c)]
        source_name = rec["prompt"].strip().rsplit(" is", 1)[0].strip()  # the decoder prompt is "NAME is"
        assert source_name in tiny_kb.names_for(cid) and source_name != rec["target"]
    with_copies = copy_examples_file(tiny_kb, tmp_path / "ex2.jsonl", tokenizer, copies=True, synonym_targets=2)
    assert len(with_copies.read_text(encoding="utf-8").splitlines()) == expected + tiny_kb.num_names


def test_the_dense_name_encoder_ships_in_the_model_and_its_settings_redo_only_the_late_stages(built, tiny_kb_dir):
    """The report and card carry the encoder's held-out row; another encoder setting keeps the trained
    models and redoes the encoder, the fusion and the pipeline; switched off, the shipped model has none."""
    report = json.loads((built / kb_linker.REPORT_FILE).read_text())
    assert 0.0 <= report["dense_acc1"] <= 1.0 and "dense" in report["dev"] and report["steps"]["encoder"] == 20
    assert "| dense name encoder |" in (built / kb_linker.CARD_FILE).read_text()
    assert (built / "angel_linker" / "name_encoder" / "encoder.json").is_file()
    state = json.loads((built / "build" / kb_linker.STATE_FILE).read_text())
    model = built / "build" / state["stages"]["pipeline"]["model"] / "model.safetensors"
    before = model.stat().st_mtime_ns
    result = _invoke(tiny_kb_dir, built, *TINY_RUN[:-2], "--no-name-encoder", *TINY_RUN[-2:])
    assert result.exit_code == 0, result.output
    after = json.loads((built / "build" / kb_linker.STATE_FILE).read_text())
    assert {k: after["stages"][k] for k in ("positive", "dpo")} == {k: state["stages"][k] for k in ("positive", "dpo")}
    assert model.stat().st_mtime_ns == before and after["stages"]["encoder"] == {"enabled": False, **{
        k: after["stages"]["encoder"][k] for k in ("seconds", "peak_rss_mb")}}
    assert not (built / "angel_linker" / "name_encoder").exists() and "dense_acc1" not in json.loads(
        (built / kb_linker.REPORT_FILE).read_text())
    assert spacy.load(built).get_pipe("angel_linker").linker.name_encoder is None
    result = _invoke(tiny_kb_dir, built, *TINY_RUN)  # back on: the module's other tests see the first build again
    assert result.exit_code == 0, result.output
    assert json.loads((built / kb_linker.REPORT_FILE).read_text())["dense_acc1"] == report["dense_acc1"]


CORPUS_ROWS = [("D001943", "breast cancer", "cancer of the breast"), ("D009203", "myocardial infarction", "heart attacks"),
               ("D006973", "hypertension", "raised blood pressure"), ("D003922", "type 1 diabetes mellitus", "type one diabetes"),
               ("D008175", "lung cancer", "cancer of the lung"), ("D008881", "migraine", "migraines"),
               ("D007022", "hypotension", "blood pressure too low")]


def test_a_users_corpus_trains_and_its_dev_set_chooses(tiny_kb, tiny_kb_dir, tmp_path):
    """``--corpus`` mentions train the model and join the encoder's synonym sets, except a surface that is
    a held-out synonym (it would teach the test answer); ``--dev`` chooses DPO and fits the fusion; both
    key the build; a missing or malformed file is refused before any work."""
    recipe = Recipe.for_kb(tiny_kb, positive_steps=6, dpo_steps=2, threads=1)
    held = split_synonyms(tiny_kb, recipe.n_dev, recipe.n_test, seed=recipe.seed)
    leak = held.test[0]
    train = tmp_path / "train.txt"
    train.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in [*CORPUS_ROWS, (leak.gold_ids[0], "x", leak.surface)]), encoding="utf-8")
    dev = tmp_path / "dev.txt"
    dev.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in CORPUS_ROWS[:6]), encoding="utf-8")
    out = tmp_path / "out"
    args = ("--corpus", train, "--dev", dev, "--corpus-format", "askapatient")
    result = _invoke(tiny_kb_dir, out, *TINY_RUN, *args, "--label", "DISEASE")
    assert result.exit_code == 0, result.output
    assert {p["label"] for p in spacy.load(out).get_pipe("entity_ruler").patterns} == {"DISEASE"}  # --label, untouched
    report = json.loads((out / kb_linker.REPORT_FILE).read_text())
    corpus = report["corpus"]
    assert corpus["train"]["mentions"] == len(CORPUS_ROWS) and corpus["train"]["held_out_surfaces_dropped"] == 1
    assert corpus["dev"]["mentions"] == 6 and set(corpus["dev_acc"]) == {"positive", "dpo", "hybrid"}
    state = json.loads((out / "build" / kb_linker.STATE_FILE).read_text())
    assert state["stages"]["positive"]["corpus_mentions"] == len(CORPUS_ROWS)
    chosen = "dpo" if corpus["dev_acc"]["dpo"]["acc1"] >= corpus["dev_acc"]["positive"]["acc1"] else "positive"
    assert report["model"] == chosen  # the user's dev set decided
    encoder = json.loads((out / "build" / chosen / "name_encoder" / "encoder.json").read_text())
    assert encoder["meta"]["extra_surfaces"] == len(CORPUS_ROWS)  # every corpus surface is new to the KB
    # another dev file is another build
    dev.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in CORPUS_ROWS[1:]), encoding="utf-8")
    user = UserCorpus(train, dev, "askapatient")
    assert kb_linker.build_fingerprint(recipe, [tiny_kb_dir], user) != state["fingerprint"]
    dev.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in CORPUS_ROWS[:6]), encoding="utf-8")
    assert kb_linker.build_fingerprint(recipe, [tiny_kb_dir], user) == state["fingerprint"]
    result = _invoke(tiny_kb_dir, tmp_path / "b", *TINY_RUN, "--corpus", tmp_path / "nope.txt")
    assert result.exit_code == 1 and "[E388]" in result.output and not (tmp_path / "b" / "build").exists()
    dev.write_text("D001943\tonly two columns\n", encoding="utf-8")
    result = _invoke(tiny_kb_dir, tmp_path / "c", *TINY_RUN, *args)
    assert result.exit_code == 1 and "dev.txt:1" in result.output and "[E319]" in result.output and not (tmp_path / "c" / "build").exists()
