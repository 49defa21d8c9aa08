"""ANGEL stage 2: negative-aware preference training (DPO and the Table-D variants) on TRL.

The policy starts from the positive-only model and learns to rank the gold name (``chosen``)
above a name the model itself confuses it with (``rejected``, mined by ``train mine``). DPO
keeps a frozen copy of the positive-only model as its reference.

Why subclass TRL instead of feeding it text: TRL 0.20's encoder-decoder path tokenizes
``prompt`` as the encoder input and ``chosen``/``rejected`` as labels decoded from the bare
decoder-start token (and its roll-based sum drops the last token of the longest completion).
ANGEL's decoder must first read the ``" mention is"`` prompt, and the scored tokens are exactly
the KB name + end-of-name after it, as the linker's trie holds them. So rows are built by
:func:`training.examples.seq2seq_example` (encoder ids, decoder ids, -100-masked labels) and
only the trainers' *data* hooks are replaced; losses, reference handling, logging,
checkpointing and evaluation stay TRL's / transformers':

* :class:`AngelDPOTrainer` (``dpo``, ``pairwise``): ``DPOTrainer`` with ``_prepare_dataset``
  (rows arrive tokenized), ``concatenated_forward`` (our decoder inputs and label mask) and, for
  the reference-free ``pairwise`` loss, ``compute_ref_log_probs`` (skips the unused reference pass).
* :class:`AngelCPOTrainer` (``cpo``, ``simpo``): ``CPOTrainer`` with ``tokenize_row`` (identity)
  and ``concatenated_forward``.

Both use :func:`sequence_logps`, so every loss compares the same log-probabilities, and
:class:`PairCollator` right-pads (BART's learned positions would shift under left padding).
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from trl import CPOConfig, CPOTrainer, DPOConfig, DPOTrainer
from trl.trainer.utils import selective_log_softmax

from spacy_angel.kb import KnowledgeBase
from spacy_angel.linker import AngelLinker, build_trie, load_model_and_tokenizer, tokenizer_fingerprint
from spacy_angel.types import Mention

from .dev_eval import DevAccuracyCallback, MaxMinutesCallback, temporary_linker
from .examples import IGNORE_INDEX, PreferencePair, seq2seq_example
from .positive import CHECKPOINT_DIR, finalize_output, training_log

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: loss option -> (TRL trainer, TRL loss_type). ``pairwise`` is DPO's sigmoid loss without a
#: reference: ``-logsigmoid(beta * (log p(chosen) - log p(rejected)))``.
LOSSES: Dict[str, Tuple[str, str]] = {
    "dpo": ("dpo", "sigmoid"),
    "pairwise": ("dpo", "sigmoid"),
    "cpo": ("cpo", "sigmoid"),
    "simpo": ("cpo", "simpo"),
}
ROW_COLUMNS = (
    "prompt_input_ids",
    "chosen_decoder_input_ids",
    "chosen_labels",
    "rejected_decoder_input_ids",
    "rejected_labels",
)
EVAL_PAIRS = 256  # training pairs re-scored at each evaluation (reward/margin curves)


class PreferenceTrainingError(ValueError):
    """The pairs, the loss option or the models cannot be used for preference training."""


# ---------------------------------------------------------------------------- data
def encode_pairs(linker: AngelLinker, pairs: Sequence[PreferencePair]) -> List[Dict[str, List[int]]]:
    """Token rows for TRL in the linker's exact decoding format (see :func:`seq2seq_example`).

    A pair whose chosen and rejected names are the same token sequence teaches nothing and
    means the pair file is broken, so it is refused with its position and mention.
    """
    rows: List[Dict[str, List[int]]] = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, PreferencePair):
            raise PreferenceTrainingError(f"pair {i}: expected a PreferencePair, got {type(pair).__name__}")
        for field in ("chosen", "rejected"):
            value = getattr(pair, field)
            if not isinstance(value, str) or not value.strip():
                raise PreferenceTrainingError(f"pair {i} (doc {pair.doc_id!r}): field {field} is empty")
        try:
            chosen = seq2seq_example(linker, pair.inputs, pair.chosen)
            rejected = seq2seq_example(linker, pair.inputs, pair.rejected)
        except ValueError as err:
            raise PreferenceTrainingError(f"pair {i} (doc {pair.doc_id!r}): {err}") from err
        if chosen["labels"] == rejected["labels"]:
            raise PreferenceTrainingError(
                f"pair {i} (doc {pair.doc_id!r}, mention {pair.mention.surface!r}): chosen {pair.chosen!r} and "
                f"rejected {pair.rejected!r} are the same name after normalisation"
            )
        rows.append(
            {
                "prompt_input_ids": chosen["input_ids"],
                "chosen_decoder_input_ids": chosen["decoder_input_ids"],
                "chosen_labels": chosen["labels"],
                "rejected_decoder_input_ids": rejected["decoder_input_ids"],
                "rejected_labels": rejected["labels"],
            }
        )
    return rows


def _pad(seqs: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    for i, seq in enumerate(seqs):
        out[i, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return out


@dataclass
class PairCollator:
    """Right-pads encoder and decoder rows (BART's learned positions count from the left edge).

    TRL's ``DataCollatorForPreference`` left-pads the prompt, which would shift every encoder
    position of a BART model; chosen and rejected decoder rows share one length so the trainers
    can stack them into a single forward pass.
    """

    pad_token_id: int

    def __call__(self, rows: Sequence[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        src = [r["prompt_input_ids"] for r in rows]
        src_len = max(len(s) for s in src)
        dec_len = max(len(r[f"{side}_decoder_input_ids"]) for r in rows for side in ("chosen", "rejected"))
        batch = {
            "prompt_input_ids": _pad(src, self.pad_token_id, src_len),
            "prompt_attention_mask": _pad([[1] * len(s) for s in src], 0, src_len),
        }
        for side in ("chosen", "rejected"):
            dec = [r[f"{side}_decoder_input_ids"] for r in rows]
            batch[f"{side}_decoder_input_ids"] = _pad(dec, self.pad_token_id, dec_len)
            batch[f"{side}_decoder_attention_mask"] = _pad([[1] * len(d) for d in dec], 0, dec_len)
            batch[f"{side}_labels"] = _pad([r[f"{side}_labels"] for r in rows], IGNORE_INDEX, dec_len)
        return batch


def sequence_logps(
    model: torch.nn.Module, batch: Dict[str, torch.Tensor], with_nll: bool = False
) -> Dict[str, torch.Tensor]:
    """Summed log-probs of chosen and rejected name + end-of-name tokens, in one forward pass.

    Rows ``[:n]`` are chosen and ``[n:]`` rejected; only positions whose label is not -100 (the
    name and end-of-name, never the ``mention is`` prompt) are counted, which is exactly what
    the linker's teacher-forced rescoring sums before length normalisation. ``with_nll`` adds
    the token-mean NLL of the chosen names (CPO's and RPO's extra term).
    """
    n = batch["prompt_input_ids"].shape[0]
    enc = batch["prompt_input_ids"]
    enc_mask = batch["prompt_attention_mask"]
    labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]], dim=0)
    outputs = model(
        input_ids=torch.cat([enc, enc], dim=0),
        attention_mask=torch.cat([enc_mask, enc_mask], dim=0),
        decoder_input_ids=torch.cat([batch["chosen_decoder_input_ids"], batch["rejected_decoder_input_ids"]], dim=0),
        decoder_attention_mask=torch.cat(
            [batch["chosen_decoder_attention_mask"], batch["rejected_decoder_attention_mask"]], dim=0
        ),
        use_cache=False,
    )
    logits = outputs.logits
    mask = labels != IGNORE_INDEX
    per_token = selective_log_softmax(logits, labels.masked_fill(~mask, 0))
    per_token = per_token.masked_fill(~mask, 0.0)
    logps = per_token.sum(-1)
    lengths = mask.sum(-1)
    out = {
        "chosen_logps": logps[:n],
        "rejected_logps": logps[n:],
        "chosen_lengths": lengths[:n],
        "rejected_lengths": lengths[n:],
        "mean_chosen_logits": logits[:n][mask[:n]].detach().mean(),
        "mean_rejected_logits": logits[n:][mask[n:]].detach().mean(),
    }
    if with_nll:
        out["nll_loss"] = F.cross_entropy(logits[:n].flatten(0, 1), labels[:n].flatten(), ignore_index=IGNORE_INDEX)
    return out


# ---------------------------------------------------------------------------- TRL trainers
class AngelDPOTrainer(DPOTrainer):
    """``DPOTrainer`` (encoder-decoder branch) reading pre-tokenized ANGEL rows."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        missing = [c for c in ROW_COLUMNS if c not in dataset.column_names]
        if missing:
            raise PreferenceTrainingError(f"{dataset_name} dataset lacks column(s) {', '.join(missing)}")
        return dataset

    def concatenated_forward(self, model, batch, is_ref_model: bool = False):
        with_nll = not is_ref_model and (self.args.rpo_alpha is not None or "sft" in self.loss_type)
        out = sequence_logps(model, batch, with_nll=with_nll)
        if "ipo" in self.loss_type:  # IPO compares mean token log-probs, as in TRL
            out["chosen_logps"] = out["chosen_logps"] / out["chosen_lengths"]
            out["rejected_logps"] = out["rejected_logps"] / out["rejected_lengths"]
        return out

    def compute_ref_log_probs(self, batch):
        if self.reference_free:  # the loss multiplies them by 0: skip the reference forward
            zeros = torch.zeros(batch["prompt_input_ids"].shape[0], device=self.accelerator.device)
            return zeros, zeros.clone()
        return super().compute_ref_log_probs(batch)


class AngelCPOTrainer(CPOTrainer):
    """``CPOTrainer`` (CPO / SimPO, no reference model) reading pre-tokenized ANGEL rows."""

    def tokenize_row(self, feature, model=None):
        return feature

    def concatenated_forward(self, model, batch):
        out = sequence_logps(model, batch, with_nll=bool(self.cpo_alpha))
        chosen, rejected = out["chosen_logps"], out["rejected_logps"]
        if self.loss_type in ("ipo", "simpo"):  # length-normalised, as in TRL's get_batch_logps
            chosen = chosen / out["chosen_lengths"]
            rejected = rejected / out["rejected_lengths"]
        nll = out["nll_loss"] if self.cpo_alpha else torch.zeros((), device=chosen.device)
        return chosen, rejected, out["mean_chosen_logits"], out["mean_rejected_logits"], nll


# ---------------------------------------------------------------------------- setup helpers
def _load_kb(kb: Union[KnowledgeBase, PathLike]) -> KnowledgeBase:
    return kb if isinstance(kb, KnowledgeBase) else KnowledgeBase.from_disk(kb)


def _check_options(loss: str, pairs: Sequence[PreferencePair], beta: float, batch_size: int, epochs: float,
                   max_steps: int, label_smoothing: float) -> None:
    if loss not in LOSSES:
        raise PreferenceTrainingError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if len(pairs) == 0:
        raise PreferenceTrainingError("no preference pairs to train on (is the pairs file empty?)")
    if not beta > 0:
        raise PreferenceTrainingError(f"beta must be positive, got {beta}")
    if batch_size < 1:
        raise PreferenceTrainingError(f"batch_size must be at least 1, got {batch_size}")
    if max_steps <= 0 and not epochs > 0:
        raise PreferenceTrainingError("set epochs > 0 or max_steps > 0")
    if not 0.0 <= label_smoothing < 0.5:
        raise PreferenceTrainingError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")


@torch.no_grad()
def pair_logps(
    model: torch.nn.Module, rows: Sequence[Dict[str, List[int]]], pad_token_id: int, batch_size: int = 64
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed log-probs of :func:`encode_pairs` rows under ``model`` (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    collate = PairCollator(pad_token_id)
    device = next(model.parameters()).device
    chosen, rejected = [], []
    try:
        for lo in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[lo : lo + batch_size]).items()}
            out = sequence_logps(model, batch)
            chosen.append(out["chosen_logps"].float().cpu())
            rejected.append(out["rejected_logps"].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


# ---------------------------------------------------------------------------- public API
def build_preference_trainer(
    model_dir: PathLike,
    kb: Union[KnowledgeBase, PathLike],
    pairs: Sequence[PreferencePair],
    work_dir: PathLike,
    *,
    loss: str = "dpo",
    beta: float = 0.1,
    ref_model_dir: Optional[PathLike] = None,
    dev_mentions: Optional[Sequence[Mention]] = None,
    epochs: float = 1.0,
    learning_rate: float = 5e-5,
    batch_size: int = 8,
    max_steps: int = -1,
    max_minutes: Optional[float] = None,
    seed: int = 0,
    num_beams: int = 5,
    eval_steps: Optional[int] = None,
    label_smoothing: float = 0.0,
    nll_alpha: Optional[float] = None,
    simpo_gamma: float = 0.5,
    context_window: int = 32,
    callbacks: Sequence[Any] = (),
    device: str = "auto",
) -> Union[AngelDPOTrainer, AngelCPOTrainer]:
    """A ready-to-``train()`` TRL trainer for ``pairs``; checkpoints go to ``work_dir``.

    ``nll_alpha`` weighs a negative log-likelihood term on the chosen names: TRL's ``rpo_alpha``
    for ``dpo`` / ``pairwise`` (off by default: plain DPO), CPO's ``cpo_alpha`` for ``cpo`` (default
    1.0) and ``simpo`` (default 0.0, plain SimPO). Why offer it for DPO: on a small model trained
    from scratch, plain DPO lowered the chosen names' likelihood along with the rejected ones and
    dev Acc@1 fell (docs/results.md); the NLL term keeps the chosen names likely. ``simpo_gamma`` is SimPO's target reward margin. With dev
    mentions, the dev set is decoded before training (logged only) and every ``eval_steps``
    (default: once per epoch, at least once per run), and the best dev Acc@1 checkpoint wins.
    ``device``: ``auto`` trains on CUDA (bf16 autocast where supported) when present, else CPU.
    """
    from datasets import Dataset
    from transformers import set_seed

    pairs = list(pairs)
    _check_options(loss, pairs, beta, batch_size, epochs, max_steps, label_smoothing)
    if device not in ("auto", "cpu", "cuda"):
        raise PreferenceTrainingError(f"unknown device {device!r}: auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise PreferenceTrainingError("device 'cuda' requested but CUDA is not available")
    kb = _load_kb(kb)
    set_seed(seed)
    model, tokenizer = load_model_and_tokenizer(model_dir, device="cpu")
    if not model.config.is_encoder_decoder:
        raise PreferenceTrainingError(f"{model_dir}: preference training needs an encoder-decoder model")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    ref_model = None
    if loss == "dpo":  # the frozen positive-only model: a separate copy, never trained
        ref_model, ref_tokenizer = load_model_and_tokenizer(ref_model_dir or model_dir, device="cpu")
        if tokenizer_fingerprint(ref_tokenizer) != tokenizer_fingerprint(tokenizer):
            raise PreferenceTrainingError(
                f"the reference model {ref_model_dir} uses another tokenizer than {model_dir}: both must share one"
            )
        ref_model.eval().requires_grad_(False)
    trie = build_trie(kb, tokenizer)
    with temporary_linker(model, tokenizer, kb, trie, num_beams=num_beams, context_window=context_window) as linker:
        rows = encode_pairs(linker, pairs)
    dev = [m for m in (dev_mentions or ()) if any(g in kb for g in m.gold_ids)]
    if dev_mentions and not dev:
        logger.warning("none of the %d dev mentions has a gold id in the KB: no dev selection", len(dev_mentions))

    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total_steps = max_steps if max_steps > 0 else max(1, math.ceil(steps_per_epoch * epochs))
    every = max(1, min(eval_steps or steps_per_epoch, total_steps))
    cuda = device != "cpu" and torch.cuda.is_available()
    common: Dict[str, Any] = dict(
        output_dir=str(work_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        max_steps=max_steps,
        seed=seed,
        data_seed=seed,
        report_to="none",
        push_to_hub=False,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=False,
        logging_steps=max(1, min(50, total_steps // 20)),
        logging_first_step=True,
        remove_unused_columns=False,
        dataloader_pin_memory=cuda,
        save_safetensors=True,
        save_only_model=True,
        disable_tqdm=True,
        beta=beta,
        loss_type=LOSSES[loss][1],
        label_smoothing=label_smoothing,
        padding_value=tokenizer.pad_token_id,
        label_pad_token_id=IGNORE_INDEX,
    )
    if dev:
        common.update(
            eval_strategy="steps",
            eval_steps=every,
            eval_on_start=True,
            save_strategy="steps",
            save_steps=every,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="dev_acc1",
            greater_is_better=True,
        )
    else:
        common.update(eval_strategy="no", save_strategy="no")
    all_callbacks: List[Any] = list(callbacks)
    if dev:
        all_callbacks.append(
            DevAccuracyCallback(
                tokenizer, kb, trie, dev, num_beams=num_beams, batch_size=max(batch_size, 16),
                context_window=context_window,
            )
        )
    if max_minutes is not None:
        all_callbacks.append(MaxMinutesCallback(max_minutes))
    shared = dict(
        model=model,
        data_collator=PairCollator(tokenizer.pad_token_id),
        train_dataset=Dataset.from_list(rows),
        # Evaluation re-scores some training pairs (reward/margin curves); dev Acc@1 comes from the callback.
        eval_dataset=Dataset.from_list(rows[:EVAL_PAIRS]) if dev else None,
        processing_class=tokenizer,
        callbacks=all_callbacks,
    )
    if LOSSES[loss][0] == "dpo":
        args = DPOConfig(reference_free=(loss == "pairwise"), rpo_alpha=nll_alpha or None, **common)
        trainer = AngelDPOTrainer(ref_model=ref_model, args=args, **shared)
    else:
        alpha = nll_alpha if nll_alpha is not None else (1.0 if loss == "cpo" else 0.0)
        # max_*_length only silence CPOConfig's warnings: rows arrive tokenized and truncated by the linker.
        args = CPOConfig(
            cpo_alpha=alpha, simpo_gamma=simpo_gamma, max_length=1024, max_prompt_length=512,
            max_completion_length=512, **common,
        )
        trainer = AngelCPOTrainer(args=args, **shared)
    return trainer


def train_preference(
    model_dir: PathLike,
    kb: Union[KnowledgeBase, PathLike],
    pairs: Sequence[PreferencePair],
    output_dir: PathLike,
    *,
    loss: str = "dpo",
    beta: float = 0.1,
    ref_model_dir: Optional[PathLike] = None,
    dev_mentions: Optional[Sequence[Mention]] = None,
    epochs: float = 1.0,
    learning_rate: float = 5e-5,
    batch_size: int = 8,
    max_steps: int = -1,
    max_minutes: Optional[float] = None,
    seed: int = 0,
    num_beams: int = 5,
    eval_steps: Optional[int] = None,
    label_smoothing: float = 0.0,
    nll_alpha: Optional[float] = None,
    simpo_gamma: float = 0.5,
    context_window: int = 32,
    keep_checkpoints: bool = False,
    device: str = "auto",
) -> Path:
    """Preference-train the positive-only model at ``model_dir`` on mined ``pairs``.

    Writes model + tokenizer and ``training_log.json`` (loss / reward-margin history, dev Acc@1
    per evaluation, the mean chosen-minus-rejected log-prob margin on the training pairs before
    and after, wall time, peak RSS) to ``output_dir`` in one rename. Checkpoints live in
    ``output_dir/checkpoints`` while training and are removed unless ``keep_checkpoints``.
    """
    started = time.time()
    pairs = list(pairs)
    output_dir = Path(output_dir)
    for source in (model_dir, ref_model_dir):
        if source is not None and output_dir.resolve() == Path(source).resolve():
            raise PreferenceTrainingError(f"output directory {output_dir} is an input model directory: choose another")
    ckpt_dir = output_dir / CHECKPOINT_DIR
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    trainer = build_preference_trainer(
        model_dir, kb, pairs, ckpt_dir, loss=loss, beta=beta, ref_model_dir=ref_model_dir,
        dev_mentions=dev_mentions, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
        max_steps=max_steps, max_minutes=max_minutes, seed=seed, num_beams=num_beams, eval_steps=eval_steps,
        label_smoothing=label_smoothing, nll_alpha=nll_alpha, simpo_gamma=simpo_gamma,
        context_window=context_window, device=device,
    )
    tokenizer = trainer.processing_class
    sample = trainer.train_dataset.select(range(min(EVAL_PAIRS, len(trainer.train_dataset)))).to_list()
    before_c, before_r = pair_logps(trainer.model, sample, tokenizer.pad_token_id)
    result = trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    after_c, after_r = pair_logps(model, sample, tokenizer.pad_token_id)
    budget = next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MaxMinutesCallback)), None)
    history = trainer.state.log_history
    dev_start = next((h["eval_dev_acc1"] for h in history if h.get("step") == 0 and "eval_dev_acc1" in h), None)
    best = trainer.state.best_metric
    if dev_start is not None and best is not None and best < dev_start:
        logger.warning("preference training lowered dev Acc@1 (%.4f before, best %.4f after)", dev_start, best)
    log = training_log(
        trainer,
        {
            "preference": [
                {k: h[k] for k in ("step", *_PREF_KEYS) if k in h} for h in history if any(k in h for k in _PREF_KEYS)
            ],
            "train_metrics": result.metrics,
            "trl_trainer": type(trainer).__name__,
            "num_pairs": len(pairs),
            "margin_before": float((before_c - before_r).mean()),
            "margin_after": float((after_c - after_r).mean()),
            "pair_accuracy_before": float((before_c > before_r).float().mean()),
            "pair_accuracy_after": float((after_c > after_r).float().mean()),
            "dev_acc1_start": dev_start,
            "wall_time_s": round(time.time() - started, 2),
            "stopped_by_time_budget": bool(budget is not None and budget.stopped),
            "device": str(trainer.args.device),
            "model_dir": str(model_dir),
            "ref_model_dir": str(ref_model_dir or model_dir) if loss == "dpo" else None,
            "settings": {
                "loss": loss,
                "beta": beta,
                "label_smoothing": label_smoothing,
                "nll_alpha": getattr(trainer, "cpo_alpha", None) if loss in ("cpo", "simpo") else trainer.args.rpo_alpha,
                "simpo_gamma": simpo_gamma if loss == "simpo" else None,
                "learning_rate": learning_rate,
                "batch_size": batch_size,
                "epochs": epochs,
                "max_steps": max_steps,
                "max_minutes": max_minutes,
                "eval_steps": eval_steps,
                "num_beams": num_beams,
                "context_window": context_window,
                "seed": seed,
            },
        },
    )
    model.eval()
    finalize_output(model, tokenizer, output_dir, log, keep_checkpoints=keep_checkpoints)
    logger.info("%s training done: %s (step %d, %.1fs)", loss, output_dir, log["global_step"], log["wall_time_s"])
    return output_dir


_PREF_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
              "eval_loss", "eval_rewards/margins", "eval_rewards/accuracies")
