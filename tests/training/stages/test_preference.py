"""Preference training (ANGEL stage 2) on TRL: what the trainers score, what they change, what they refuse.

A tiny BART is first fitted for a few seconds on (synonym -> preferred name) so that log-probs
and margins mean something; pairs then oppose each gold name to a confusable concept's name.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from safetensors.torch import load_file
from trl import CPOTrainer, DPOTrainer

from conftest import TINY_CONCEPTS
from spacy_angel.seq2seq.loading import load_model_and_tokenizer, save_pretrained_atomic
from spacy_angel.types import Mention
from training.evaluation.dev_accuracy import temporary_linker
from training.examples.encoding import IGNORE_INDEX, name_target, seq2seq_example
from training.examples.pair_files import PreferencePair
from training.settings import PreferenceSettings
from spacy_angel.errors import PreferenceTrainingError
from training.examples.pair_rows import PairCollator, encode_pairs, pair_logps
from training.stages.preference import AngelCPOTrainer, AngelDPOTrainer, build_preference_trainer, train_preference

# CPU even where CUDA exists: the checks below compare exact numbers computed on CPU tensors.
_build = partial(build_preference_trainer, device="cpu")
_train = partial(train_preference, device="cpu")

CONFUSABLE = {  # gold concept -> concept whose name is the hard negative
    "D003924": "D003922",
    "D006973": "D007022",
    "D001943": "D008175",
    "D009203": "D008881",
}


def _mention(surface: str, gold: str) -> Mention:
    text = f"the patient was diagnosed with {surface} last year ."
    start = text.index(surface)
    return Mention("doc", text, start, start + len(surface), (gold,))


def _pairs() -> List[PreferencePair]:
    pairs = []
    for gold, other in CONFUSABLE.items():
        for surface in TINY_CONCEPTS[gold][1:3]:
            m = _mention(surface, gold)
            pairs.append(
                PreferencePair(m.doc_id, m.text, m.start, m.end, m.gold_ids, TINY_CONCEPTS[gold][0], TINY_CONCEPTS[other][0])
            )
    return pairs


def _pad(rows: List[List[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def positive_dir(tmp_path_factory, tiny_kb, tiny_model_dir) -> Path:
    """The tiny model after a few seconds of positive training (mention -> preferred name)."""
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    with temporary_linker(model, tok, tiny_kb) as linker:
        examples = [
            seq2seq_example(linker, _mention(name, cid), names[0]) for cid, names in TINY_CONCEPTS.items() for name in names
        ]
    pad = tok.pad_token_id
    batch = {
        "input_ids": _pad([e["input_ids"] for e in examples], pad),
        "attention_mask": _pad([[1] * len(e["input_ids"]) for e in examples], 0),
        "decoder_input_ids": _pad([e["decoder_input_ids"] for e in examples], pad),
        "decoder_attention_mask": _pad([[1] * len(e["decoder_input_ids"]) for e in examples], 0),
        "labels": _pad([e["labels"] for e in examples], IGNORE_INDEX),
    }
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    return save_pretrained_atomic(model, tok, tmp_path_factory.mktemp("pos") / "positive")


@pytest.fixture(scope="module")
def pair_rows(positive_dir, tiny_kb) -> List[Dict[str, List[int]]]:
    model, tok = load_model_and_tokenizer(positive_dir, device="cpu")
    with temporary_linker(model, tok, tiny_kb) as linker:
        return encode_pairs(linker, _pairs())


def _margin(model_or_dir, rows) -> float:
    """Mean log p(chosen) - log p(rejected) over the pairs."""
    if isinstance(model_or_dir, (str, Path)):
        model_or_dir, _ = load_model_and_tokenizer(model_or_dir, device="cpu")
    chosen, rejected = pair_logps(model_or_dir, rows, pad_token_id=1)  # <pad> of init_model's tokenizer
    return float((chosen - rejected).mean())


def _params(model) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------- DPO
def test_dpo_raises_margin_over_reference_and_writes_log(tmp_path, positive_dir, tiny_kb, pair_rows):
    out = _train(
        positive_dir, tiny_kb, _pairs(), tmp_path / "dpo", loss="dpo", max_steps=8, learning_rate=3e-3, batch_size=4
    )
    before = _margin(positive_dir, pair_rows)  # the reference = the positive-only model
    after = _margin(out, pair_rows)
    assert after > before + 0.5, (before, after)
    log = json.loads((out / "training_log.json").read_text())
    assert log["trl_trainer"] == "AngelDPOTrainer" and log["global_step"] == 8
    assert log["margin_before"] == pytest.approx(before, abs=1e-3)
    assert log["margin_after"] == pytest.approx(after, abs=1e-3)
    assert [h["step"] for h in log["loss"]][-1] == 8
    assert any("rewards/margins" in h for h in log["preference"])
    assert log["peak_rss_mb"] > 0 and log["wall_time_s"] > 0
    assert not (out / "checkpoints").exists()
    # the saved directory loads as a plain HF checkpoint (no linker wrapper keys)
    keys = load_file(str(out / "model.safetensors")).keys()
    assert not any(".inner." in k for k in keys)


def test_reference_is_frozen_positive_model(tmp_path, positive_dir, tiny_model_dir, tiny_kb):
    trainer = _build(
        positive_dir, tiny_kb, _pairs(), tmp_path / "work", loss="dpo", max_steps=3, learning_rate=3e-3, batch_size=4
    )
    ref, policy = trainer.ref_model, trainer.model
    assert ref is not policy
    ref_ptrs = {p.data_ptr() for p in ref.parameters()}
    assert not ref_ptrs & {p.data_ptr() for p in policy.parameters()}
    assert not any(p.requires_grad for p in ref.parameters())
    on_disk, _ = load_model_and_tokenizer(positive_dir, device="cpu")
    ref_before, policy_before = _params(ref), _params(policy)
    for name, value in on_disk.state_dict().items():
        assert torch.equal(ref_before[name], value), name
    trainer.train()
    ref_after, policy_after = _params(ref), _params(policy)
    assert all(torch.equal(ref_before[k], ref_after[k]) for k in ref_before)
    assert any(not torch.equal(policy_before[k], policy_after[k]) for k in policy_before)

    # an explicit reference directory is honoured
    other = _build(
        positive_dir, tiny_kb, _pairs()[:2], tmp_path / "work2", loss="dpo", ref_model_dir=tiny_model_dir, max_steps=1
    )
    untrained, _ = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    ref_state = other.ref_model.state_dict()
    assert all(torch.equal(ref_state[k], v) for k, v in untrained.state_dict().items())


def test_encoder_decoder_branch_feeds_prompted_decoder(tmp_path, positive_dir, tiny_kb):
    pairs = _pairs()[:4]
    trainer = _build(positive_dir, tiny_kb, pairs, tmp_path / "work", loss="dpo", max_steps=1, batch_size=4)
    assert isinstance(trainer, DPOTrainer) and trainer.is_encoder_decoder
    seen = []

    def spy(module, args, kwargs):
        seen.append({k: kwargs[k].clone() for k in ("input_ids", "decoder_input_ids") if k in kwargs})

    handle = trainer.model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        trainer.train()
    finally:
        handle.remove()
    assert len(seen) == 1  # one concatenated chosen+rejected policy pass per step
    dec, enc = seen[0]["decoder_input_ids"], seen[0]["input_ids"]
    assert dec.shape[0] == enc.shape[0] == 2 * len(pairs)
    with temporary_linker(trainer.model, trainer.processing_class, tiny_kb) as linker:
        expected = [
            (seq2seq_example(linker, p.mention, p.chosen), seq2seq_example(linker, p.mention, p.rejected), linker.encode(p.mention))
            for p in pairs
        ]
    n, pad = len(pairs), trainer.processing_class.pad_token_id

    def padded(ids, width):
        return list(ids) + [pad] * (width - len(ids))

    matched = set()
    for i in range(n):  # chosen row i and rejected row n + i come from the same pair (order is shuffled)
        hits = [
            j
            for j, (chosen, rejected, _) in enumerate(expected)
            if enc[i].tolist() == padded(chosen["input_ids"], enc.shape[1])
            and dec[i].tolist() == padded(chosen["decoder_input_ids"], dec.shape[1])
            and dec[n + i].tolist() == padded(rejected["decoder_input_ids"], dec.shape[1])
        ]
        assert len(hits) == 1, f"row {i} matches no pair"
        matched.add(hits[0])
        prompt = expected[hits[0]][2][1]  # [start] + " mention is": what the linker's decoder starts from
        assert dec[i, : len(prompt)].tolist() == dec[n + i, : len(prompt)].tolist() == list(prompt)
        assert int(dec[i, 0]) == trainer.model.config.decoder_start_token_id
    assert matched == set(range(n))


def test_trainer_logps_equal_hand_computed_and_linker_scores(tmp_path, positive_dir, tiny_kb):
    pairs = _pairs()[:3]
    trainer = _build(positive_dir, tiny_kb, pairs, tmp_path / "work", loss="dpo", max_steps=1)
    model, tok = trainer.model.eval(), trainer.processing_class
    batch = PairCollator(tok.pad_token_id)(trainer.train_dataset.to_list())
    with torch.no_grad():
        out = trainer.concatenated_forward(model, batch)
        ref_c, ref_r = trainer.compute_ref_log_probs(batch)
    with temporary_linker(model, tok, tiny_kb) as linker, torch.no_grad():
        for i, pair in enumerate(pairs):
            for side, got, ref_got in (("chosen", out["chosen_logps"], ref_c), ("rejected", out["rejected_logps"], ref_r)):
                ex = seq2seq_example(linker, pair.mention, getattr(pair, side))
                logits = model(
                    input_ids=torch.tensor([ex["input_ids"]]), decoder_input_ids=torch.tensor([ex["decoder_input_ids"]])
                ).logits[0]
                logp = torch.log_softmax(logits, -1)
                by_hand = sum(float(logp[j, t]) for j, t in enumerate(ex["labels"]) if t != IGNORE_INDEX)
                n_scored = sum(t != IGNORE_INDEX for t in ex["labels"])
                assert n_scored == len(name_target(linker, getattr(pair, side)))  # name + end-of-name only
                assert float(got[i]) == pytest.approx(by_hand, abs=1e-4)
                assert float(ref_got[i]) == pytest.approx(by_hand, abs=1e-4)  # policy == reference before training
        # and the linker's own beam-search score (length-normalised) is the same quantity
        top = linker.link([pairs[0].mention], top_k=2)[0]
        assert top, "the linker found no candidate"
        name = top[0].name
        other = next(n for n in tiny_kb.names if name_target(linker, n) != name_target(linker, name))
        probe = PreferencePair("doc", pairs[0].text, pairs[0].start, pairs[0].end, (), name, other)
        row = encode_pairs(linker, [probe])
    with torch.no_grad():
        got = trainer.concatenated_forward(model, PairCollator(tok.pad_token_id)(row))["chosen_logps"]
    assert float(got[0]) == pytest.approx(top[0].score * len(name_target(linker, name)), abs=1e-3)


# ----------------------------------------------------------------------------------- other losses
@pytest.mark.parametrize("loss", ["pairwise", "cpo", "simpo"])
def test_other_losses_raise_margin(tmp_path, positive_dir, tiny_kb, pair_rows, loss):
    trainer = _build(
        positive_dir, tiny_kb, _pairs(), tmp_path / "work", loss=loss, max_steps=6, learning_rate=3e-3, batch_size=4
    )
    if loss == "pairwise":
        assert isinstance(trainer, AngelDPOTrainer) and trainer.reference_free
        ref_calls = []
        trainer.ref_model.register_forward_pre_hook(lambda *a: ref_calls.append(1))
    else:
        assert isinstance(trainer, AngelCPOTrainer) and isinstance(trainer, CPOTrainer)
        assert trainer.loss_type == {"cpo": "sigmoid", "simpo": "simpo"}[loss]
        assert trainer.cpo_alpha == {"cpo": 1.0, "simpo": 0.0}[loss]
    before = _margin(trainer.model, pair_rows)
    trainer.train()
    after = _margin(trainer.model, pair_rows)
    assert after > before + 0.1, (loss, before, after)
    if loss == "pairwise":
        assert not ref_calls  # reference-free: the reference pass is skipped


def test_dpo_nll_term_adds_chosen_nll_to_the_loss(tmp_path, positive_dir, tiny_kb, pair_rows):
    """nll_alpha on DPO = TRL's RPO term: loss = DPO loss + alpha * NLL of the chosen names."""
    plain = _build(positive_dir, tiny_kb, _pairs(), tmp_path / "plain", loss="dpo", max_steps=1, batch_size=4)
    rpo = _build(positive_dir, tiny_kb, _pairs(), tmp_path / "rpo", loss="dpo", max_steps=1, batch_size=4, nll_alpha=0.5)
    assert plain.args.rpo_alpha is None and rpo.args.rpo_alpha == 0.5
    batch = PairCollator(plain.processing_class.pad_token_id)(pair_rows[:4])
    with torch.no_grad():
        loss_plain, _ = plain.get_batch_loss_metrics(plain.model, batch)
        loss_rpo, metrics = rpo.get_batch_loss_metrics(rpo.model, batch)
        nll = rpo.concatenated_forward(rpo.model, batch)["nll_loss"]
    assert float(nll) > 0
    assert float(loss_rpo) == pytest.approx(float(loss_plain) + 0.5 * float(nll), rel=1e-4)


# ----------------------------------------------------------------------------------- dev selection, budget
def test_dev_selection_keeps_best_checkpoint(tmp_path, positive_dir, tiny_kb):
    dev = [_mention(TINY_CONCEPTS[c][1], c) for c in CONFUSABLE]
    out = _train(
        positive_dir, tiny_kb, _pairs(), tmp_path / "out", loss="dpo", max_steps=4, eval_steps=2,
        learning_rate=3e-3, batch_size=4, dev_mentions=dev, keep_checkpoints=True,
    )
    log = json.loads((out / "training_log.json").read_text())
    assert [d["step"] for d in log["dev"]] == [0, 2, 4]
    assert all(0.0 <= d["eval_dev_acc1"] <= 1.0 for d in log["dev"])
    assert log["dev_acc1_start"] == log["dev"][0]["eval_dev_acc1"]
    best = log["best_checkpoint"]
    assert best in ("checkpoint-2", "checkpoint-4")
    assert log["best_metric"] == max(d["eval_dev_acc1"] for d in log["dev"][1:])
    final = load_file(str(out / "model.safetensors"))
    kept = load_file(str(out / "checkpoints" / best / "model.safetensors"))
    assert all(torch.equal(final[k], kept[k]) for k in kept)


def test_time_budget_stops_training(tmp_path, positive_dir, tiny_kb):
    out = _train(positive_dir, tiny_kb, _pairs(), tmp_path / "out", loss="pairwise", max_steps=50, max_minutes=0)
    log = json.loads((out / "training_log.json").read_text())
    assert log["stopped_by_time_budget"] is True and log["global_step"] == 1


# ----------------------------------------------------------------------------------- bad input
def test_bad_input_is_refused(tmp_path, positive_dir, tiny_kb):
    with pytest.raises(PreferenceTrainingError, match="no preference pairs"):
        _train(positive_dir, tiny_kb, [], tmp_path / "a")
    with pytest.raises(PreferenceTrainingError, match="unknown loss 'kto'.*dpo, pairwise, cpo, simpo"):
        _train(positive_dir, tiny_kb, _pairs(), tmp_path / "b", loss="kto")
    with pytest.raises(PreferenceTrainingError, match="beta"):
        _train(positive_dir, tiny_kb, _pairs(), tmp_path / "c", beta=0.0)
    with pytest.raises(PreferenceTrainingError, match="input model directory"):
        _train(positive_dir, tiny_kb, _pairs(), positive_dir)
    same = PreferencePair("doc7", "has niddm", 4, 9, ("D003924",), "NIDDM", "niddm")
    with pytest.raises(PreferenceTrainingError, match=r"pair 1 \(doc 'doc7', mention 'niddm'\).*same name"):
        _train(positive_dir, tiny_kb, [_pairs()[0], same], tmp_path / "d")
    empty = PreferencePair("doc8", "has niddm", 4, 9, ("D003924",), "niddm", " ")
    with pytest.raises(PreferenceTrainingError, match="pair 0 .*field rejected is empty"):
        _train(positive_dir, tiny_kb, [empty], tmp_path / "e")
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


def test_resume_continues_a_killed_run_to_the_same_weights(tmp_path, positive_dir, tiny_kb, kill_at):
    """With resume (full checkpoints), re-running the same command after a kill ends where an
    uninterrupted run does; the default keeps the old behaviour (fresh start, weights-only)."""
    settings = PreferenceSettings(loss="dpo", max_steps=6, batch_size=4, learning_rate=3e-3, resume=True, device="cpu")
    ref = _train(positive_dir, tiny_kb, _pairs(), tmp_path / "ref", settings)
    with pytest.raises(KeyboardInterrupt):
        _train(positive_dir, tiny_kb, _pairs(), tmp_path / "run", settings, callbacks=[kill_at(3)])
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2" / "optimizer.pt").is_file()
    out = _train(positive_dir, tiny_kb, _pairs(), tmp_path / "run", settings)
    log = json.loads((out / "training_log.json").read_text())
    assert log["resumed_from"] == "checkpoint-2" and log["global_step"] == 6
    a, b = load_file(str(out / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not PreferenceSettings().resume
