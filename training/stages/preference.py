"""ANGEL stage 2: negative-aware preference training (DPO and the Table-D variants) on TRL.

The policy starts from the positive-only model and learns to rank the gold name (``chosen``)
above a name the model itself confuses it with (``rejected``, mined by ``train mine``). DPO
keeps a frozen copy of the positive-only model as its reference.

Why subclass TRL instead of feeding it text: TRL 0.20's encoder-decoder path tokenizes
``prompt`` as the encoder input and ``chosen``/``rejected`` as labels decoded from the bare
decoder-start token (and its roll-based sum drops the last token of the longest completion).
ANGEL's decoder must first read the ``" mention is"`` prompt, and the scored tokens are exactly
the KB name + end-of-name after it, as the linker's trie holds them. So rows are built by
:func:`training.examples.encoding.seq2seq_example` (encoder ids, decoder ids, -100-masked labels) and
only the trainers' *data* hooks are replaced; losses, reference handling, logging,
checkpointing and evaluation stay TRL's / transformers':

* :class:`AngelDPOTrainer` (``dpo``, ``pairwise``): ``DPOTrainer`` with ``_prepare_dataset``
  (rows arrive tokenized), ``concatenated_forward`` (our decoder inputs and label mask) and, for
  the reference-free ``pairwise`` loss, ``compute_ref_log_probs`` (skips the unused reference pass).
* :class:`AngelCPOTrainer` (``cpo``, ``simpo``): ``CPOTrainer`` with ``tokenize_row`` (identity)
  and ``concatenated_forward``.

Both use :func:`training.examples.pair_rows.sequence_logps`, so every loss compares the same
log-probabilities; the rows, their collator and their log-probs live in :mod:`training.examples.pair_rows`.
Settings come from :class:`training.settings.PreferenceSettings`, run bookkeeping from :mod:`training.runs.bookkeeping`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from trl import CPOConfig, CPOTrainer, DPOConfig, DPOTrainer

from spacy_angel.errors import Errors, PreferenceTrainingError, Warnings
from spacy_angel.kb.readers import load_kb
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.seq2seq.loading import load_model_and_tokenizer
from spacy_angel.seq2seq.prompt import settle_context_window
from spacy_angel.trie.kb_trie import build_trie, tokenizer_fingerprint
from spacy_angel.types import Mention
from training.evaluation.dev_accuracy import DevAccuracyCallback, temporary_linker
from training.examples.encoding import IGNORE_INDEX
from training.examples.pair_files import PreferencePair
from training.examples.pair_rows import ROW_COLUMNS, PairCollator, encode_pairs, pair_logps, sequence_logps
from training.runs import bookkeeping as run
from training.runs import distributed
from training.settings import PreferenceSettings, resolve

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


EVAL_PAIRS = 256  # training pairs re-scored at each evaluation (reward/margin curves)


# ---------------------------------------------------------------------------- TRL trainers
class AngelDPOTrainer(DPOTrainer):
    """``DPOTrainer`` (encoder-decoder branch) reading pre-tokenized ANGEL rows."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        missing = [c for c in ROW_COLUMNS if c not in dataset.column_names]
        if missing:
            raise PreferenceTrainingError(Errors.E347.format(dataset=dataset_name, columns=", ".join(missing)))
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
def _check_options(s: PreferenceSettings, pairs: Sequence[PreferencePair]) -> None:
    if s.loss not in LOSSES:
        raise PreferenceTrainingError(Errors.E348.format(loss=s.loss, losses=", ".join(LOSSES)))
    if len(pairs) == 0:
        raise PreferenceTrainingError(Errors.E349)
    if not s.beta > 0:
        raise PreferenceTrainingError(Errors.E350.format(beta=s.beta))
    if s.batch_size < 1:
        raise PreferenceTrainingError(Errors.E351.format(batch_size=s.batch_size))
    if s.max_steps <= 0 and not s.epochs > 0:
        raise PreferenceTrainingError(Errors.E352)
    if not 0.0 <= s.label_smoothing < 0.5:
        raise PreferenceTrainingError(Errors.E353.format(label_smoothing=s.label_smoothing))
    if s.device not in ("auto", "cpu", "cuda"):
        raise PreferenceTrainingError(Errors.E301.format(device=s.device))
    if s.device == "cuda" and not torch.cuda.is_available():
        raise PreferenceTrainingError(Errors.E302)


# ---------------------------------------------------------------------------- public API
def _load_models(model_dir: PathLike, s: PreferenceSettings) -> Tuple[Any, Any, Any]:
    """(policy, tokenizer, frozen reference or None): DPO's reference is a separate, untrained copy."""
    model, tokenizer = load_model_and_tokenizer(model_dir, device="cpu")
    if not model.config.is_encoder_decoder:
        raise PreferenceTrainingError(Errors.E354.format(model_dir=model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    ref_model = None
    if s.loss == "dpo":
        ref_model, ref_tokenizer = load_model_and_tokenizer(s.ref_model_dir or model_dir, device="cpu")
        if tokenizer_fingerprint(ref_tokenizer) != tokenizer_fingerprint(tokenizer):
            raise PreferenceTrainingError(Errors.E355.format(ref_model_dir=s.ref_model_dir, model_dir=model_dir))
        ref_model.eval().requires_grad_(False)
    return model, tokenizer, ref_model


def _trl_arguments(s: PreferenceSettings, work_dir: PathLike, num_rows: int, pad_token_id: int, dev: bool) -> Dict[str, Any]:
    """Arguments common to ``DPOConfig`` and ``CPOConfig``; checkpoints hold weights only unless ``resume``."""
    steps_per_epoch = math.ceil(num_rows / (s.batch_size * distributed.world_size() * distributed.accumulation_steps()))
    steps = run.total_steps(num_rows, s.batch_size, s.epochs, s.max_steps)
    every = max(1, min(s.eval_steps or steps_per_epoch, steps))
    common: Dict[str, Any] = dict(
        run.common_arguments(s, work_dir),
        bf16=run.uses_cuda(s) and torch.cuda.is_bf16_supported(),
        fp16=False,
        logging_steps=max(1, min(50, steps // 20)),
        logging_first_step=True,
        save_only_model=not s.resume,
        disable_tqdm=True,
        beta=s.beta,
        loss_type=LOSSES[s.loss][1],
        label_smoothing=s.label_smoothing,
        padding_value=pad_token_id,
        label_pad_token_id=IGNORE_INDEX,
    )
    if dev:
        common.update(
            eval_strategy="steps", eval_steps=every, eval_on_start=True, save_strategy="steps", save_steps=every,
            save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="dev_acc1", greater_is_better=True,
        )
    elif s.resume:  # resumable checkpoints even without a dev set
        common.update(eval_strategy="no", save_strategy="steps", save_steps=every, save_total_limit=1)
    else:
        common.update(eval_strategy="no", save_strategy="no")
    return common


def build_preference_trainer(
    model_dir: PathLike,
    kb: Union[KnowledgeBase, PathLike],
    pairs: Sequence[PreferencePair],
    work_dir: PathLike,
    settings: Optional[PreferenceSettings] = None,
    *,
    dev_mentions: Optional[Sequence[Mention]] = None,
    callbacks: Sequence[Any] = (),
    **overrides: Any,
) -> Union[AngelDPOTrainer, AngelCPOTrainer]:
    """A ready-to-``train()`` TRL trainer for ``pairs``; checkpoints go to ``work_dir``.

    ``settings`` (:class:`PreferenceSettings`; keyword ``overrides`` of its fields still work).
    ``nll_alpha`` weighs a negative log-likelihood term on the chosen names: TRL's ``rpo_alpha``
    for ``dpo`` / ``pairwise`` (off by default: plain DPO), CPO's ``cpo_alpha`` for ``cpo`` (default
    1.0) and ``simpo`` (default 0.0, plain SimPO). Why offer it for DPO: on a small model trained
    from scratch, plain DPO lowered the chosen names' likelihood along with the rejected ones and
    dev Acc@1 fell (docs/results.md); the NLL term keeps the chosen names likely. With dev
    mentions, the dev set is decoded before training (logged only) and every ``eval_steps``
    (default: once per epoch, at least once per run), and the best dev Acc@1 checkpoint wins.
    ``device``: ``auto`` trains on CUDA (bf16 autocast where supported) when present, else CPU.
    """
    from datasets import Dataset
    from transformers import set_seed

    s = resolve(PreferenceSettings, settings, overrides)
    pairs = list(pairs)
    _check_options(s, pairs)
    kb = load_kb(kb)
    run.pin_threads(s.threads)
    set_seed(s.seed)
    model, tokenizer, ref_model = _load_models(model_dir, s)
    # the window asked for, else the start model's; saved in config.json as the linker's default
    s = dataclasses.replace(s, context_window=settle_context_window(model, s.context_window))
    trie = build_trie(kb, tokenizer)
    with temporary_linker(model, tokenizer, kb, trie, num_beams=s.num_beams, context_window=s.context_window) as linker:
        rows = encode_pairs(linker, pairs)
    dev = [m for m in (dev_mentions or ()) if any(g in kb for g in m.gold_ids)]
    if dev_mentions and not dev:
        logger.warning(Warnings.W101.format(n=len(dev_mentions)))
    common = _trl_arguments(s, work_dir, len(rows), tokenizer.pad_token_id, bool(dev))
    all_callbacks = run.with_safety_cap(callbacks, s.max_minutes)
    if dev:
        all_callbacks.append(
            DevAccuracyCallback(
                tokenizer, kb, trie, dev, num_beams=s.num_beams, batch_size=max(s.batch_size, 16),
                context_window=s.context_window,
            )
        )
    shared = dict(
        model=model,
        data_collator=PairCollator(tokenizer.pad_token_id),
        train_dataset=Dataset.from_list(rows),
        # Evaluation re-scores some training pairs (reward/margin curves); dev Acc@1 comes from the callback.
        eval_dataset=Dataset.from_list(rows[:EVAL_PAIRS]) if dev else None,
        processing_class=tokenizer,
        callbacks=all_callbacks,
    )
    if LOSSES[s.loss][0] == "dpo":
        args = DPOConfig(reference_free=(s.loss == "pairwise"), rpo_alpha=s.nll_alpha or None, **common)
        return AngelDPOTrainer(ref_model=ref_model, args=args, **shared)
    alpha = s.nll_alpha if s.nll_alpha is not None else (1.0 if s.loss == "cpo" else 0.0)
    # max_*_length only silence CPOConfig's warnings: rows arrive tokenized and truncated by the linker.
    args = CPOConfig(
        cpo_alpha=alpha, simpo_gamma=s.simpo_gamma, max_length=1024, max_prompt_length=512,
        max_completion_length=512, **common,
    )
    return AngelCPOTrainer(args=args, **shared)


def train_preference(
    model_dir: PathLike,
    kb: Union[KnowledgeBase, PathLike],
    pairs: Sequence[PreferencePair],
    output_dir: Optional[PathLike] = None,
    settings: Optional[PreferenceSettings] = None,
    *,
    dev_mentions: Optional[Sequence[Mention]] = None,
    callbacks: Sequence[Any] = (),
    **overrides: Any,
) -> Path:
    """Preference-train the positive-only model at ``model_dir`` on mined ``pairs``.

    Writes model + tokenizer and ``training_log.json`` (loss / reward-margin history, dev Acc@1
    per evaluation, the mean chosen-minus-rejected log-prob margin on the training pairs before
    and after, wall time, peak RSS) to ``output_dir`` in one rename. Checkpoints live in
    ``output_dir/checkpoints`` while training and are removed unless ``keep_checkpoints``; with
    ``resume`` they are full (optimiser included) and a re-run continues the last one.
    """
    s = resolve(PreferenceSettings, settings, overrides)
    started = time.time()
    pairs = list(pairs)
    if output_dir is None and s.output_dir is None:
        raise PreferenceTrainingError(Errors.E300)
    target = output_dir if output_dir is not None else s.output_dir
    output_dir = run.check_output_dir(target, [model_dir, s.ref_model_dir], PreferenceTrainingError)
    ckpt_dir = output_dir / run.CHECKPOINT_DIR
    if ckpt_dir.exists() and not s.resume and distributed.is_main_process():
        shutil.rmtree(ckpt_dir)
    trainer = build_preference_trainer(model_dir, kb, pairs, ckpt_dir, s, dev_mentions=dev_mentions, callbacks=callbacks)
    run.log_dicts_off(trainer, show_bar=s.progress)
    resume_from = None
    if s.resume:
        shaping = ("loss", "beta", "nll_alpha", "simpo_gamma", "learning_rate", "batch_size", "seed", "label_smoothing")
        run_config = {"data": run.rows_digest(trainer.train_dataset, ROW_COLUMNS), **{k: getattr(s, k) for k in shaping}}
        budget = trainer.args.max_steps if trainer.args.max_steps > 0 else None
        resume_from = run.prepare_checkpoints(ckpt_dir, run_config, True, PreferenceTrainingError, budget_steps=budget)
    tokenizer = trainer.processing_class
    sample = trainer.train_dataset.select(range(min(EVAL_PAIRS, len(trainer.train_dataset)))).to_list()
    before_c, before_r = pair_logps(trainer.model, sample, tokenizer.pad_token_id)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    model = trainer.accelerator.unwrap_model(trainer.model)
    after_c, after_r = pair_logps(model, sample, tokenizer.pad_token_id)
    history = trainer.state.log_history
    dev_start = next((h["eval_dev_acc1"] for h in history if h.get("step") == 0 and "eval_dev_acc1" in h), None)
    best = trainer.state.best_metric
    if dev_start is not None and best is not None and best < dev_start:
        logger.warning(Warnings.W102.format(before=dev_start, best=best))
    settings_log = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("output_dir", "progress", "ref_model_dir")}
    settings_log["nll_alpha"] = getattr(trainer, "cpo_alpha", None) if s.loss in ("cpo", "simpo") else trainer.args.rpo_alpha
    settings_log["simpo_gamma"] = s.simpo_gamma if s.loss == "simpo" else None
    log = run.training_log(
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
            "resumed_from": resume_from.name if resume_from else None,
            "device": str(trainer.args.device),
            "model_dir": str(model_dir),
            "ref_model_dir": str(s.ref_model_dir or model_dir) if s.loss == "dpo" else None,
            "settings": settings_log,
        },
    )
    model.eval()
    run.finalize_output(model, tokenizer, output_dir, log, keep_checkpoints=s.keep_checkpoints or log["stopped_by_time_budget"], kb=kb)
    logger.info("%s training done: %s (step %d, %.1fs)", s.loss, output_dir, log["global_step"], log["wall_time_s"])
    return output_dir


_PREF_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
              "eval_loss", "eval_rewards/margins", "eval_rewards/accuracies")
