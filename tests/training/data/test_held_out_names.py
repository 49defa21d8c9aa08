"""Mining on KB names held out of positive training, and mining's kill-and-rerun guarantee.

The held-out names are checked on what the trainer and the miner were actually given: no
held-out name is ever a training input, and each is decoded against a KB that lacks it (so the
model cannot copy it) but keeps every other name.
"""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from spacy_angel.apps.cli import get_app
from training.stages import mining as negatives, positive
from training.examples.pair_files import PreferencePair, read_pairs
from training.data.kb_subsets import HELD_OUT_FILE, sample_held_out_names
from spacy_angel.errors import TrainingDataError
from training.stages.positive import train_positive

from conftest import tiny_pubtator_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(get_app(), [str(a) for a in args])


def test_sample_keeps_a_name_per_concept_and_is_seeded(tiny_kb):
    held = sample_held_out_names(tiny_kb, 0.7, seed=0)
    assert held and held == sample_held_out_names(tiny_kb, 0.7, seed=0)
    assert any(sample_held_out_names(tiny_kb, 0.7, seed=s) != held for s in (1, 2, 3))
    names = {n for n, _ in held}
    for cid in tiny_kb.concept_ids:
        kept = [n for n in tiny_kb.names_for(cid) if n not in names]
        assert kept, f"{cid} lost every name"
    for name, cid in held:
        assert tiny_kb.ids_for(name) == (cid,)
    assert sample_held_out_names(tiny_kb, 0.0) == []
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        sample_held_out_names(tiny_kb, 1.0)


@pytest.fixture(scope="module")
def held_out_model(tmp_path_factory, tiny_kb, tiny_model_dir):
    """A positive model trained for a few steps with half the eligible KB names held out, and
    the surfaces its examples were built from (spied on ``seq2seq_example``)."""
    inputs = []
    real = positive.seq2seq_example

    def spy(linker, mention, target):
        inputs.append(mention.surface if hasattr(mention, "surface") else mention[0])
        return real(linker, mention, target)

    positive.seq2seq_example = spy
    try:
        out = train_positive(
            tiny_model_dir, tiny_kb, [], tmp_path_factory.mktemp("ho") / "positive", max_steps=3, batch_size=8,
            kb_names_as_mentions=True, hold_out_kb_names=0.5, seed=0, progress=False,
        )
    finally:
        positive.seq2seq_example = real
    return out, inputs


def test_positive_training_never_reads_a_held_out_name(held_out_model, tiny_kb):
    out, inputs = held_out_model
    record = json.loads((out / HELD_OUT_FILE).read_text(encoding="utf-8"))
    held = {row["name"] for row in record["names"]}
    assert [(r["name"], r["id"]) for r in record["names"]] == sample_held_out_names(tiny_kb, 0.5, seed=0)
    assert held and not held & set(inputs)
    assert len(inputs) == tiny_kb.num_names - len(held)
    log = json.loads((out / "training_log.json").read_text(encoding="utf-8"))
    assert log["data"]["kb_names_held_out"] == len(held)
    with pytest.raises(TrainingDataError, match="needs kb_names_as_mentions"):
        train_positive(out, tiny_kb, [], out.parent / "x", max_steps=1, hold_out_kb_names=0.5, progress=False)


def test_mining_decodes_held_out_names_against_the_kb_without_them(held_out_model, tiny_kb, tiny_kb_dir, tmp_path, monkeypatch):
    out, _ = held_out_model
    held = dict(sample_held_out_names(tiny_kb, 0.5, seed=0))
    calls = []
    real = negatives.mine_pairs

    def spy(model_dir, kb, mentions, *args, **kwargs):
        calls.append((kb, [m.surface for m in mentions], [m.gold_ids for m in mentions]))
        return real(model_dir, kb, mentions, *args, **kwargs)

    monkeypatch.setattr(negatives, "mine_pairs", spy)
    corpus = tiny_pubtator_corpus(tmp_path / "train.txt")
    pairs_path = tmp_path / "pairs.jsonl"
    result = invoke("train", "mine", out, tiny_kb_dir, corpus, "--output", pairs_path, "--top-k", 3, "--num-beams", 3,
                    "--held-out-kb-names", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert len(calls) == 2
    corpus_kb, _, _ = calls[0]
    names_kb, surfaces, golds = calls[1]
    assert corpus_kb.num_names == tiny_kb.num_names
    assert sorted(surfaces) == sorted(held) and all(g == (held[s],) for s, g in zip(surfaces, golds))
    assert set(names_kb.names) == set(tiny_kb.names) - set(held)
    rows = list(read_pairs(pairs_path))
    from_names = [p for p in rows if p.doc_id.startswith("kb-name-")]
    stats = json.loads(pairs_path.with_name("pairs.jsonl.stats.json").read_text(encoding="utf-8"))
    assert stats["pairs"] == len(rows) and stats["held_out_kb_names"]["pairs"] == len(from_names)
    assert stats["pairs_from_mentions"] == len(rows) - len(from_names)
    for p in from_names:
        assert p.text in held and p.text not in (p.chosen, p.rejected)
        assert p.chosen in tiny_kb.names_for(held[p.text]) and held[p.text] not in tiny_kb.ids_for(p.rejected)
    assert "held-out KB names" in result.output


def test_mining_held_out_names_needs_the_models_list(tiny_kb_dir, tiny_model_dir, tmp_path):
    corpus = tiny_pubtator_corpus(tmp_path / "train.txt")
    result = invoke("train", "mine", tiny_model_dir, tiny_kb_dir, corpus, "--output", tmp_path / "p.jsonl",
                    "--held-out-kb-names", "--device", "cpu")
    assert result.exit_code != 0 and HELD_OUT_FILE in result.output
    assert not (tmp_path / "p.jsonl").exists()


def test_killed_mining_leaves_no_pairs_file_and_the_rerun_equals_an_uninterrupted_one(
    tiny_kb_dir, tiny_model_dir, tmp_path, monkeypatch
):
    corpus = tiny_pubtator_corpus(tmp_path / "train.txt")
    args = ("train", "mine", tiny_model_dir, tiny_kb_dir, corpus, "--top-k", 3, "--num-beams", 3, "--device", "cpu")
    whole = tmp_path / "whole" / "pairs.jsonl"
    assert invoke(*args, "--output", whole).exit_code == 0
    assert whole.read_text(encoding="utf-8").count("\n") >= 2, "the test needs a file of several rows"

    killed = tmp_path / "killed" / "pairs.jsonl"
    real, written = PreferencePair.to_json, []

    def dies_on_the_second_row(self):
        written.append(1)
        if len(written) == 2:
            raise KeyboardInterrupt("killed while writing")
        return real(self)

    monkeypatch.setattr(PreferencePair, "to_json", dies_on_the_second_row)
    assert invoke(*args, "--output", killed).exit_code != 0
    assert len(written) == 2 and not killed.exists() and not list(killed.parent.glob("*"))
    monkeypatch.setattr(PreferencePair, "to_json", real)

    assert invoke(*args, "--output", killed).exit_code == 0
    assert killed.read_bytes() == whole.read_bytes()
    stats = [json.loads(p.with_name("pairs.jsonl.stats.json").read_text(encoding="utf-8")) for p in (whole, killed)]
    for s in stats:
        s.pop("seconds")
        s["corpus"]["read"].pop("path", None)
    assert stats[0] == stats[1]
