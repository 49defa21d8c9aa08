"""Positive-only training on the tiny KB: examples, collator, learning, dev selection, resume."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from spacy_angel.seq2seq.loading import load_model_and_tokenizer
from spacy_angel.trie.kb_trie import build_trie
from spacy_angel.types import Mention
from training.evaluation import dev_accuracy as dev_eval
from training.data.records import MentionList
from training.evaluation.dev_accuracy import dev_accuracy, temporary_linker
from training.examples.encoding import IGNORE_INDEX
from training.stages.positive import (
    Seq2SeqCollator,
    kb_name_examples,
    mention_examples,
    pretraining_examples,
    train_positive,
)
from spacy_angel.errors import TrainingDataError
from training.examples.pretraining import write_pretraining_data
from training.evaluation.similarity_bins import NameIndex

from conftest import tiny_mentions_in_context


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model_and_tools(model_dir, kb):
    model, tok = load_model_and_tokenizer(model_dir, device="cpu")
    return model, tok, build_trie(kb, tok)


def acc1(model_dir, kb, mentions):
    model, tok, trie = model_and_tools(model_dir, kb)
    return dev_accuracy(model, tok, kb, trie, mentions, num_beams=3)["acc1"]


def test_collator_masks_prompt_and_pads(tiny_kb, tiny_model_dir):
    model, tok, trie = model_and_tools(tiny_model_dir, tiny_kb)
    index = NameIndex(tiny_kb).fit()
    mentions = tiny_mentions_in_context()[:2]
    with temporary_linker(model, tok, tiny_kb, trie) as linker:
        examples, stats = mention_examples(linker, index, mentions, synonyms_k=2)
        prompts = [linker.encode(m)[1] for m in mentions]
    assert stats["examples"] == 4 and len(examples) == 4
    batch = Seq2SeqCollator(tok.pad_token_id)(examples)
    pad = tok.pad_token_id
    for i, ex in enumerate(examples):
        n_src, n_dec = len(ex["input_ids"]), len(ex["decoder_input_ids"])
        assert batch["input_ids"][i, :n_src].tolist() == ex["input_ids"]
        assert (batch["input_ids"][i, n_src:] == pad).all() and (batch["attention_mask"][i, n_src:] == 0).all()
        assert batch["attention_mask"][i, :n_src].all()
        assert (batch["decoder_input_ids"][i, n_dec:] == pad).all()
        assert (batch["labels"][i, n_dec:] == IGNORE_INDEX).all()
        # the decoder reads the whole " mention is" prompt; labels start with the first name token
        prompt = prompts[i // 2]
        assert batch["decoder_input_ids"][i, : len(prompt)].tolist() == list(prompt)
        labels = batch["labels"][i].tolist()
        assert labels[: len(prompt) - 1] == [IGNORE_INDEX] * (len(prompt) - 1)
        assert labels[len(prompt) - 1] != IGNORE_INDEX
        assert labels[n_dec - 1] == tok.eos_token_id  # the target ends with end-of-name
        # teacher forcing: label j is decoder input j + 1
        assert labels[len(prompt) - 1 : n_dec - 1] == batch["decoder_input_ids"][i, len(prompt) : n_dec].tolist()


def test_mention_examples_composite_conjunct_and_missing_ids(tiny_kb, tiny_model_dir):
    model, tok, trie = model_and_tools(tiny_model_dir, tiny_kb)
    index = NameIndex(tiny_kb).fit()
    composite = Mention.bare("breast and lung cancer", ("D001943", "D008175"))
    conjunct = Mention.bare("hypertension with migraine", ("D006973", "D008881"))
    partly = Mention.bare("migraine", ("D008881", "D000000"))
    missing = Mention.bare("nothing", ("D000000",))
    mentions = MentionList([composite, conjunct, partly, missing], conjunct=[conjunct])
    with temporary_linker(model, tok, tiny_kb, trie) as linker:
        examples, stats = mention_examples(linker, index, mentions, synonyms_k=3)
    # composite: 3 + 3 names; conjunct: 2 (hypertension) + 2 (migraine); partly: 2 migraine names
    assert stats["examples"] == len(examples) == 6 + 4 + 2
    assert stats["composite_mentions"] == 1 and stats["conjunct_mentions"] == 1
    assert stats["mentions_without_kb_id"] == 1 and stats["gold_ids_not_in_kb"] == 2
    assert stats["mentions_used"] == 3
    # the embed_positions swap of the linker is undone: state dict keys are the original ones
    assert "model.decoder.embed_positions.weight" in model.state_dict()


def test_extra_examples_from_kb_and_pretraining(tiny_kb, tiny_model_dir, tmp_path):
    model, tok, trie = model_and_tools(tiny_model_dir, tiny_kb)
    index = NameIndex(tiny_kb).fit()
    n = write_pretraining_data(tiny_kb, tmp_path / "pt" / "pretraining.jsonl", show_progress=False)
    with temporary_linker(model, tok, tiny_kb, trie) as linker:
        names = kb_name_examples(linker, index)
        pre = pretraining_examples(linker, tmp_path / "pt")
        assert len(names) == tiny_kb.num_names
        assert len(pre) == n > 0
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"source": "a", "prompt": "a is", "target": "b"}\n{"source": "a"}\n', encoding="utf-8")
        with pytest.raises(TrainingDataError, match=r"bad\.jsonl:2: .*prompt, target"):
            pretraining_examples(linker, bad)


def test_training_makes_the_model_link_its_mentions(tiny_kb, tiny_model_dir, tmp_path):
    mentions = tiny_mentions_in_context()
    before = acc1(tiny_model_dir, tiny_kb, mentions)
    out = train_positive(
        tiny_model_dir, tiny_kb, mentions, tmp_path / "pos", dev_mentions=mentions[::3], max_steps=200,
        batch_size=16, learning_rate=3e-3, eval_steps=100, progress=False,
    )
    after = acc1(out, tiny_kb, mentions)
    assert after >= 0.6 and after >= before + 0.4, (before, after)
    log = json.loads((out / "training_log.json").read_text())
    losses = [e["loss"] for e in log["loss"]]
    assert losses[-1] < 0.6 * losses[0]
    dev = [e["eval_dev_acc1"] for e in log["dev"]]
    assert len(dev) == 2 and log["best_metric"] == max(dev)
    assert log["global_step"] == 200 and log["peak_rss_mb"] > 0 and log["wall_time_s"] > 0
    assert log["data"]["train_examples"] > len(mentions)
    assert not (out / "checkpoints").exists()  # removed after a completed run
    card = (out / "README.md").read_text(encoding="utf-8")  # model card: KB fingerprint, dev figures
    assert log["kb"]["fingerprint"] == tiny_kb.fingerprint() in card and "## Results (dev)" in card
    reloaded, _ = load_model_and_tokenizer(out, device="cpu")  # no missing / renamed keys
    assert "model.decoder.embed_positions.weight" in reloaded.state_dict()


def script_dev_accuracy(monkeypatch, values):
    """Every dev evaluation returns the next of ``values``; returns the list of calls made."""
    scripted, calls = iter(values), []

    def fake_dev_accuracy(model, *args, **kwargs):
        calls.append(1)
        value = next(scripted)
        return {"acc1": value, "acc5": value}

    monkeypatch.setattr(dev_eval, "dev_accuracy", fake_dev_accuracy)
    return calls


def test_dev_metric_selects_the_best_checkpoint(tiny_kb, tiny_model_dir, tmp_path, monkeypatch):
    """The callback's metric reaches Trainer's best-checkpoint logic: the scripted best (2nd of 4
    evaluations) is the checkpoint reloaded at the end, though later steps trained on."""
    calls = script_dev_accuracy(monkeypatch, [0.1, 0.9, 0.3, 0.2])
    mentions = tiny_mentions_in_context()
    out = train_positive(
        tiny_model_dir, tiny_kb, mentions, tmp_path / "sel", dev_mentions=mentions[:4], max_steps=20,
        batch_size=8, learning_rate=3e-3, eval_steps=5, keep_checkpoints=True, progress=False,
    )
    log = json.loads((out / "training_log.json").read_text())
    assert len(calls) == 4
    assert [e["eval_dev_acc1"] for e in log["dev"]] == [0.1, 0.9, 0.3, 0.2]
    assert log["best_checkpoint"] == "checkpoint-10" and log["best_metric"] == 0.9
    final = load_file(str(out / "model.safetensors"))
    best = load_file(str(out / "checkpoints" / "checkpoint-10" / "model.safetensors"))
    last = load_file(str(out / "checkpoints" / "checkpoint-20" / "model.safetensors"))
    assert all(torch.equal(final[k], best[k]) for k in best)
    assert any(not torch.equal(final[k], last[k]) for k in last)


def test_the_last_step_is_scored_when_eval_steps_does_not_divide_it(tiny_kb, tiny_model_dir, tmp_path, monkeypatch):
    """max_steps 12 with eval_steps 5: HF scores steps 5 and 10 only, and the run used to end as one
    of those; the last step is scored too, and when it is best it is the model the run returns."""
    script_dev_accuracy(monkeypatch, [0.1, 0.3, 0.9])
    mentions = tiny_mentions_in_context()
    out = train_positive(
        tiny_model_dir, tiny_kb, mentions, tmp_path / "last", dev_mentions=mentions[:4], max_steps=12,
        batch_size=8, learning_rate=3e-3, eval_steps=5, keep_checkpoints=True, progress=False,
    )
    log = json.loads((out / "training_log.json").read_text())
    assert [(e["step"], e["eval_dev_acc1"]) for e in log["dev"]] == [(5, 0.1), (10, 0.3), (12, 0.9)]
    assert log["best_checkpoint"] == "checkpoint-12" and log["global_step"] == 12
    final = load_file(str(out / "model.safetensors"))
    last = load_file(str(out / "checkpoints" / "checkpoint-12" / "model.safetensors"))
    assert all(torch.equal(final[k], last[k]) for k in last)


def test_resume_after_interruption_matches_uninterrupted_run(tiny_kb, tiny_model_dir, tmp_path, kill_at):
    mentions = tiny_mentions_in_context()
    common = dict(max_steps=30, batch_size=8, learning_rate=3e-3, save_steps=10, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_positive(tiny_model_dir, tiny_kb, mentions, tmp_path / "run", callbacks=[kill_at(15)], **common)
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-10").is_dir()
    assert not (tmp_path / "run" / "model.safetensors").exists()
    # other data cannot silently continue those checkpoints
    with pytest.raises(TrainingDataError, match="different run"):
        train_positive(tiny_model_dir, tiny_kb, mentions[:-1], tmp_path / "run", **common)
    out = train_positive(tiny_model_dir, tiny_kb, mentions, tmp_path / "run", **common)
    log = json.loads((out / "training_log.json").read_text())
    assert log["resumed_from"] == "checkpoint-10" and log["global_step"] == 30
    assert min(e["step"] for e in log["loss"]) <= 10  # history carried over from the checkpoint
    ref = train_positive(tiny_model_dir, tiny_kb, mentions, tmp_path / "ref", **common)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_time_budget_stops_and_keeps_a_checkpoint(tiny_kb, tiny_model_dir, tmp_path):
    mentions = tiny_mentions_in_context()
    out = train_positive(
        tiny_model_dir, tiny_kb, mentions, tmp_path / "budget", max_steps=50, batch_size=8, max_minutes=0.0,
        progress=False,
    )
    log = json.loads((out / "training_log.json").read_text())
    assert log["stopped_by_time_budget"] and log["global_step"] == 1
    assert (out / "checkpoints" / "checkpoint-1").is_dir()  # a larger budget resumes from here
    assert (out / "model.safetensors").exists()


def test_bad_inputs_are_refused(tiny_kb, tiny_model_dir, tmp_path):
    with pytest.raises(TrainingDataError, match="no training examples"):
        train_positive(tiny_model_dir, tiny_kb, [Mention.bare("x", ("D000000",))], tmp_path / "x", max_steps=1, progress=False)
    with pytest.raises(TrainingDataError, match="input model directory"):
        train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tiny_model_dir, max_steps=1, progress=False)
