"""Cross-fitted mining (``train crossfit``): folds by document, and no mention is ever mined by a
fold model whose training data contained it (checked on what the trainer and the miner were
actually given, and on the pairs file the command writes)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_angel.cli import get_app
from spacy_angel.types import Mention
from training import crossfit
from training.crossfit import document_folds, mention_key
from training.examples import read_pairs

from conftest import tiny_pubtator_corpus as pubtator_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(get_app(), [str(a) for a in args])


def test_document_folds_are_seeded_balanced_and_by_document():
    mentions = [Mention(f"d{i}", "x", 0, 1, ("C",)) for i in range(10) for _ in range(3)]
    folds = document_folds(mentions, 3, seed=0)
    assert set(folds) == {f"d{i}" for i in range(10)}
    assert sorted(list(folds.values()).count(f) for f in range(3)) == [3, 3, 4]
    assert folds == document_folds(list(reversed(mentions)), 3, seed=0)  # input order does not matter
    assert any(document_folds(mentions, 3, seed=s) != folds for s in (1, 2, 3))
    with pytest.raises(ValueError, match="at least 2 folds"):
        document_folds(mentions, 1)
    with pytest.raises(ValueError, match="2 document"):
        document_folds(mentions[:6], 3)


def test_crossfit_never_mines_a_mention_with_a_model_that_saw_it(tmp_path, monkeypatch, tiny_kb, tiny_kb_dir, tiny_model_dir):
    corpus = pubtator_corpus(tmp_path / "train.txt")
    trained, mined, kb_names = {}, {}, {}
    real_train, real_mine = crossfit.train_positive, crossfit.mine_pairs

    def spy_train(model_dir, kb, mentions, output_dir, *args, **kwargs):
        trained[Path(output_dir).resolve()] = {mention_key(m) for m in mentions}
        kb_names[Path(output_dir).resolve()] = set(kb.names)
        return real_train(model_dir, kb, mentions, output_dir, *args, **kwargs)

    def spy_mine(model_dir, kb, mentions, *args, **kwargs):
        mined[Path(model_dir).resolve()] = [mention_key(m) for m in mentions]
        return real_mine(model_dir, kb, mentions, *args, **kwargs)

    monkeypatch.setattr(crossfit, "train_positive", spy_train)
    monkeypatch.setattr(crossfit, "mine_pairs", spy_mine)
    folds_dir, pairs = tmp_path / "folds", tmp_path / "pairs.jsonl"
    command = (
        "train", "crossfit", tiny_model_dir, tiny_kb_dir, corpus, "--output", folds_dir, "--pairs", pairs,
        "--kb-names-as-mentions", "--folds", 3, "--max-steps", 4, "--batch-size", 8, "--synonyms-k", 1, "--top-k", 3,
        "--num-beams", 3,
    )
    result = invoke(*command)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "in 3 folds" in result.output

    models = sorted(trained)
    assert models == sorted(mined) == [(folds_dir / f"fold-{f}").resolve() for f in range(3)]
    everything = set().union(*trained.values(), *map(set, mined.values()))
    assert len(everything) == 20
    all_mined = [key for keys in mined.values() for key in keys]
    assert sorted(all_mined) == sorted(everything)  # every mention mined exactly once
    doc = lambda key: json.loads(key)[0]  # noqa: E731
    for model in models:
        assert mined[model] and not set(mined[model]) & trained[model]
        assert not {doc(k) for k in mined[model]} & {doc(k) for k in trained[model]}  # whole documents held out
        assert set(mined[model]) | trained[model] == everything
        # every corpus surface is a KB name here: the fold model's KB (its KB-name examples) lacks the held-out ones
        surfaces = {(lambda k: k[1][k[2]:k[3]])(json.loads(key)) for key in mined[model]}
        assert surfaces and surfaces <= set(tiny_kb.names) and not surfaces & kb_names[model]
        assert len(kb_names[model]) == tiny_kb.num_names - len(surfaces)

    rows = list(read_pairs(pairs))
    assert rows, "a barely trained model makes mistakes to mine"
    for p in rows:
        model = (folds_dir / f"fold-{p.fold}").resolve()
        key = mention_key(p.mention)
        assert key in mined[model] and key not in trained[model]
        assert set(tiny_kb.ids_for(p.chosen)) & set(p.gold_ids)
    stats = json.loads((tmp_path / "pairs.jsonl.stats.json").read_text())
    assert stats["pairs"] == len(rows) and sum(f["mined_mentions"] for f in stats["per_fold"]) == 20
    record = json.loads((folds_dir / "fold-1" / "crossfit_fold.json").read_text())
    assert set(record["held_out_documents"]) == {doc(k) for k in mined[models[1]]}

    # the same command again reuses the fold models and writes the same pairs
    before = pairs.read_bytes()
    trained.clear()
    assert invoke(*command).exit_code == 0
    assert trained == {} and pairs.read_bytes() == before
    # a different step budget is a different fold model: trained again
    changed = list(command)
    changed[changed.index("--max-steps") + 1] = 5
    assert invoke(*changed).exit_code == 0
    assert len(trained) == 3
    # without the name hold-out, the fold models see every KB name (what the flag is there to prevent)
    trained.clear()
    assert invoke(*command, "--no-hold-out-names").exit_code == 0
    assert all(names == set(tiny_kb.names) for names in kb_names.values()) and len(trained) == 3


def test_crossfit_refuses_what_it_cannot_do(tmp_path, tiny_kb_dir, tiny_model_dir):
    corpus = pubtator_corpus(tmp_path / "train.txt")
    base = ("train", "crossfit", tiny_model_dir, tiny_kb_dir, corpus, "--output", tmp_path / "f", "--pairs", tmp_path / "p.jsonl")
    result = invoke(*base, "--strategy", "tfidf")
    assert result.exit_code == 1 and "cannot be cross-fitted" in result.output
    result = invoke(*base, "--folds", 11)
    assert result.exit_code == 1 and "10 document(s) cannot make 11 folds" in result.output
    assert not (tmp_path / "p.jsonl").exists()


def test_read_pairs_checks_the_fold(tmp_path):
    row = {"text": "niddm", "start": 0, "end": 5, "chosen": "niddm", "rejected": "iddm"}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({**row, "fold": 1}) + "\n" + json.dumps(row) + "\n")
    assert [p.fold for p in read_pairs(path)] == [1, None]
    path.write_text(json.dumps({**row, "fold": "one"}) + "\n")
    with pytest.raises(ValueError, match="p.jsonl:1: field fold"):
        list(read_pairs(path))
