"""Cross-fitted mining (``train crossfit``): folds by document or by surface, and no mention is ever
mined by a fold model whose training data contained it (by surface: nor any record of its text) (checked on what the trainer and the miner were
actually given, and on the pairs file the command writes)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_angel.apps.cli import get_app
from spacy_angel.types import Mention
from training.stages import crossfit
from training.data.corpora import read_askapatient as read_mentions
from training.stages.crossfit import mention_key, unit_folds
from training.examples.pair_files import read_pairs

from conftest import TINY_CONCEPTS, tiny_pubtator_corpus as pubtator_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(get_app(), [str(a) for a in args])


def test_document_folds_are_seeded_balanced_and_by_document():
    mentions = [Mention(f"d{i}", "x", 0, 1, ("C",)) for i in range(10) for _ in range(3)]
    folds = unit_folds(mentions, 3, seed=0)
    assert set(folds) == {f"d{i}" for i in range(10)}
    assert sorted(list(folds.values()).count(f) for f in range(3)) == [3, 3, 4]
    assert folds == unit_folds(list(reversed(mentions)), 3, seed=0)  # input order does not matter
    assert any(unit_folds(mentions, 3, seed=s) != folds for s in (1, 2, 3))
    with pytest.raises(ValueError, match="at least 2 folds"):
        unit_folds(mentions, 1)
    with pytest.raises(ValueError, match="2 document"):
        unit_folds(mentions[:6], 3)


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
    result = invoke(*base, "--fold-by", "sentence")
    assert result.exit_code == 1 and "fold_by must be one of document, surface" in result.output
    result = invoke(*base, "--only-fold", 2)
    assert result.exit_code == 1 and "only_fold must be a fold number from 0 to 1" in result.output
    assert not (tmp_path / "p.jsonl").exists()


def test_read_pairs_checks_the_fold(tmp_path):
    row = {"text": "niddm", "start": 0, "end": 5, "chosen": "niddm", "rejected": "iddm"}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({**row, "fold": 1}) + "\n" + json.dumps(row) + "\n")
    assert [p.fold for p in read_pairs(path)] == [1, None]
    path.write_text(json.dumps({**row, "fold": "one"}) + "\n")
    with pytest.raises(ValueError, match="p.jsonl:1: field fold"):
        list(read_pairs(path))


def askapatient_corpus(path: Path) -> Path:
    """AskAPatient-style records (id, concept name, text) in one 'document': every KB name of the
    tiny KB three times (as written, upper-cased, spaces doubled), so one surface has several records."""
    variants = lambda name: (name, name.upper(), name.replace(" ", "  "))  # noqa: E731
    rows = [f"{cid}\t{names[0]}\t{text}" for cid, names in TINY_CONCEPTS.items() for name in names for text in variants(name)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_surface_folds_keep_every_record_of_a_text_together():
    mentions = [Mention.bare(t, ("C",)) for t in ("Heart attack", "heart  attack", "HEART ATTACK", "migraine", "Migraine", "iddm")]
    folds = unit_folds(mentions, 2, seed=0, fold_by="surface")
    assert set(folds) == {"heart attack", "migraine", "iddm"}
    assert folds == unit_folds(list(reversed(mentions)), 2, seed=0, fold_by="surface")
    with pytest.raises(ValueError, match="1 document.*--fold-by surface"):
        unit_folds(mentions, 2)


def test_surface_crossfit_never_mines_a_text_its_fold_model_read(tmp_path, monkeypatch, tiny_kb_dir, tiny_model_dir):
    corpus = askapatient_corpus(tmp_path / "aap.txt")
    trained, mined = {}, {}
    real_train, real_mine = crossfit.train_positive, crossfit.mine_pairs
    surface = lambda m: " ".join(m.surface.lower().split())  # noqa: E731

    def spy_train(model_dir, kb, mentions, output_dir, *args, **kwargs):
        trained[Path(output_dir).name] = {surface(m) for m in mentions}
        return real_train(model_dir, kb, mentions, output_dir, *args, **kwargs)

    def spy_mine(model_dir, kb, mentions, *args, **kwargs):
        mined[Path(model_dir).name] = [surface(m) for m in mentions]
        return real_mine(model_dir, kb, mentions, *args, **kwargs)

    monkeypatch.setattr(crossfit, "train_positive", spy_train)
    monkeypatch.setattr(crossfit, "mine_pairs", spy_mine)
    common = (
        "--corpus-format", "askapatient", "--fold-by", "surface", "--no-hold-out-names", "--folds", 2,
        "--max-steps", 3, "--batch-size", 8, "--synonyms-k", 1, "--top-k", 3, "--num-beams", 3,
    )
    parallel, pairs = tmp_path / "parallel", tmp_path / "pairs.jsonl"
    # one process per fold (--only-fold): each trains its own fold model and writes no pairs
    for fold in (0, 1):
        result = invoke("train", "crossfit", tiny_model_dir, tiny_kb_dir, corpus, "--output", parallel, "--pairs", pairs, *common, "--only-fold", fold)
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert f"fold {fold} model ready" in result.output and not pairs.exists()
    assert sorted(trained) == ["fold-0", "fold-1"] and mined == {}
    record = json.loads((parallel / "fold-1" / "crossfit_fold.json").read_text())
    assert record["held_out_surfaces"] and "held_out_documents" not in record

    # the run without --only-fold reuses both models and mines every record with the model that never read its text
    fold_models = dict(trained)
    trained.clear()
    result = invoke("train", "crossfit", tiny_model_dir, tiny_kb_dir, corpus, "--output", parallel, "--pairs", pairs, *common)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert trained == {} and sorted(mined) == ["fold-0", "fold-1"]
    assert sorted(mined["fold-0"] + mined["fold-1"]) == sorted(surface(m) for m in read_mentions(corpus))
    for fold in ("fold-0", "fold-1"):
        assert mined[fold] and not set(mined[fold]) & fold_models[fold]
    assert set(record["held_out_surfaces"]) == set(mined["fold-1"])

    # the same folds trained one after the other in one process give the same pairs, byte for byte
    result = invoke("train", "crossfit", tiny_model_dir, tiny_kb_dir, corpus, "--output", tmp_path / "serial", "--pairs", tmp_path / "serial.jsonl", *common)
    assert result.exit_code == 0 and len(trained) == 2
    assert (tmp_path / "serial.jsonl").read_bytes() == pairs.read_bytes()
