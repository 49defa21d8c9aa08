"""The runtime CLI end to end: kb build -> init-model -> link, and its error messages."""
from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from spacy_angel.apps.cli import get_app

runner = CliRunner()
TSV = "D001943\tbreast cancer\nD001943\tbreast carcinoma\nD008881\tmigraine\nD006973\thypertension\tHigh blood pressure.\n"


def invoke(*args):
    return runner.invoke(get_app(), [str(a) for a in args])


def test_build_init_link(tmp_path):
    (tmp_path / "kb.tsv").write_text(TSV)
    result = invoke("kb", "build", tmp_path / "kb.tsv", "--output", tmp_path / "kb")
    assert result.exit_code == 0, result.output
    assert "3 concepts and 4 names" in result.output
    assert invoke("init-model", tmp_path / "kb", tmp_path / "model", "--size", "tiny").exit_code == 0
    text = "She had breast cancer and migraine."
    lines = [
        {"id": "a", "text": text, "spans": [{"start": 8, "end": 21}, {"start": 26, "end": 34}]},
        {"id": "b", "text": "hypertension", "start": 0, "end": 12},
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = invoke("link", tmp_path / "model", tmp_path / "kb", tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl",
                    "--device", "cpu", "--top-k", "2")
    assert result.exit_code == 0, result.output
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["mention"] for o in out] == ["breast cancer", "migraine", "hypertension"]
    for o in out:
        assert 1 <= len(o["candidates"]) <= 2
        for c in o["candidates"]:
            assert set(c["ids"]) <= {"D001943", "D008881", "D006973"}
            assert 0 < c["score"] <= 1


def test_link_int8_matches_float32_and_refuses_unknown_dtypes(tmp_path):
    (tmp_path / "kb.tsv").write_text(TSV)
    invoke("kb", "build", tmp_path / "kb.tsv", "--output", tmp_path / "kb")
    invoke("init-model", tmp_path / "kb", tmp_path / "model", "--size", "tiny")
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "text": "breast cancer", "start": 0, "end": 13}) + "\n")
    outputs = {}
    for dtype in ("float32", "int8"):
        out = tmp_path / f"{dtype}.jsonl"
        result = invoke("link", tmp_path / "model", tmp_path / "kb", tmp_path / "in.jsonl", "-o", out,
                        "--device", "cpu", "--dtype", dtype, "--mode", "beam")
        assert result.exit_code == 0, result.output
        outputs[dtype] = [json.loads(x) for x in out.read_text().splitlines()]
    assert [o["mention"] for o in outputs["int8"]] == [o["mention"] for o in outputs["float32"]]
    assert all(o["candidates"] for o in outputs["int8"])
    result = invoke("link", tmp_path / "model", tmp_path / "kb", tmp_path / "in.jsonl", "-o", tmp_path / "x.jsonl",
                    "--device", "cpu", "--dtype", "int4")
    assert result.exit_code == 1 and "E007" in result.output and "int4" in result.output
    assert not (tmp_path / "x.jsonl").exists()


def test_errors_name_the_problem(tmp_path):
    (tmp_path / "bad.tsv").write_text("D1\tok name\nD2\n")
    result = invoke("kb", "build", tmp_path / "bad.tsv", "--output", tmp_path / "kb", "--format", "tsv")
    assert result.exit_code == 1
    assert "bad.tsv" in result.output and "2" in result.output
    result = invoke("kb", "build", tmp_path / "bad.tsv", "--output", tmp_path / "kb", "--format", "xml")
    assert result.exit_code == 1 and "xml" in result.output
    (tmp_path / "kb.tsv").write_text(TSV)
    invoke("kb", "build", tmp_path / "kb.tsv", "--output", tmp_path / "kb")
    (tmp_path / "in.jsonl").write_text('{"text": "abc", "start": 0, "end": 99}\n')
    result = invoke("link", tmp_path / "nowhere", tmp_path / "kb", tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl")
    assert result.exit_code == 1 and "in.jsonl:1" in result.output
    (tmp_path / "in.jsonl").write_text('{"text": "abc", "start": 0, "end": 3}\n')
    result = invoke("link", tmp_path / "nowhere", tmp_path / "kb", tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl")
    assert result.exit_code == 1 and "does not exist" in result.output
    (tmp_path / "plain.txt").write_text("breast cancer\n")
    result = invoke("link", tmp_path / "nowhere", tmp_path / "kb", tmp_path / "plain.txt", "-o", tmp_path / "o.jsonl")
    assert result.exit_code == 1 and "--ner" in result.output


def test_train_is_found_through_the_entry_point_group():
    """`train` comes from the spacy_angel_cli entry point (setup.cfg), not from an import of training/;
    without one, the runtime never loads training/ and `spacy-angel train` says how to install it."""
    import subprocess
    import sys

    from spacy_angel.apps import cli

    assert [(ep.name, ep.value) for ep in cli._cli_entry_points()] == [("train", "training.cli:app")]
    no_plugins = "import spacy_angel.apps.cli as c, sys; c._cli_entry_points = lambda: []; "
    probe = no_plugins + "c.get_app(); print(any(m.split('.')[0] == 'training' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    out = subprocess.run([sys.executable, "-c", no_plugins + "c.main(['train', 'positive', 'x'])"], capture_output=True, text=True)
    assert out.returncode == 1 and "pip install 'spacy-angel[train]'" in out.stderr


def test_init_model_names_the_line_of_a_non_utf8_corpus(tmp_path, tiny_kb_dir):
    corpus = tmp_path / "texts.txt"
    corpus.write_bytes("heart attack\ncaf\xe9 au lait spots\n".encode("latin-1"))
    out = tmp_path / "model"
    result = runner.invoke(get_app(), ["init-model", str(tiny_kb_dir), str(out), "--corpus", str(corpus)])
    assert result.exit_code == 1
    assert f"{corpus}:2:" in result.output and "E111" in result.output and "0xe9" in result.output
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("usearch") is None, reason="needs usearch (the ann extra)")
def test_kb_build_ann_and_link_with_ann_search(tmp_path):
    (tmp_path / "kb.tsv").write_text(TSV)
    result = invoke("kb", "build", tmp_path / "kb.tsv", "--output", tmp_path / "kb", "--ann", "--cores", "0")
    assert result.exit_code != 0 and not (tmp_path / "kb").exists()  # --cores counts from 1
    result = invoke("kb", "build", tmp_path / "kb.tsv", "--output", tmp_path / "kb", "--ann", "--cores", "1")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kb" / "tfidf-ann.usearch").is_file()
    assert invoke("init-model", tmp_path / "kb", tmp_path / "model", "--size", "tiny").exit_code == 0
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "text": "breast cancers", "start": 0, "end": 14}) + "\n")
    outputs = {}
    for search in ("exact", "ann"):
        out = tmp_path / f"{search}.jsonl"
        result = invoke("link", tmp_path / "model", tmp_path / "kb", tmp_path / "in.jsonl", "-o", out,
                        "--device", "cpu", "--search", search)
        assert result.exit_code == 0, result.output
        outputs[search] = [json.loads(x) for x in out.read_text().splitlines()]
    assert outputs["ann"] == outputs["exact"]  # four names: the graph holds them all
    result = invoke("link", tmp_path / "model", tmp_path / "kb", tmp_path / "in.jsonl", "-o", tmp_path / "x.jsonl",
                    "--search", "graph")
    assert result.exit_code == 1 and "E223" in result.output and not (tmp_path / "x.jsonl").exists()
