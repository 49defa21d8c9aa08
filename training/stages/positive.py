"""Positive-only training (ANGEL stage 1): teach the decoder to generate gold KB names.

Targets (ANGEL, Kim et al. 2025): for each training mention and each of its gold concepts, the
``synonyms_k`` (default 3) names of that concept most similar to the mention under character
3-gram TF-IDF (:meth:`spacy_angel.retrieval.tfidf.NameIndex.top_names_for_concept`); one
``(mention, name)`` example per target. Several gold ids:

* composite mentions (``D001943|D010051``, "breast and ovarian cancers") yield one example set
  per concept -- the decoder emits one name, and the mention is correct if it emits any of them;
* conjunct mentions (``D007153+D040181``, in ``MentionList.is_conjunct``) are treated the same
  way: the model cannot emit "both", and evaluation (ANGEL/BioSyn convention) counts any gold id
  as correct, so each concept's names are a valid target. They are counted in the stats.

Gold ids missing from the KB are skipped (counted); a mention left without any KB id adds nothing.

Optional extra examples: KB pre-training JSONL (``training.examples.pretraining``: ``source``,
``prompt``, ``target``), and "KB names as mentions" (each KB name as a bare mention whose target
is the TF-IDF-closest *other* name of its concept, or itself for a one-name concept) -- useful
when training from scratch, where the model has never seen most KB names.

The loop is ``transformers.Seq2SeqTrainer`` configured from :class:`training.settings.PositiveSettings`:
label smoothing, warmup + linear/cosine decay, dev Acc@1 with the constrained decoder to keep the
best checkpoint (:mod:`training.evaluation.dev_accuracy`). How the run is kept -- checkpoints under
``output_dir/checkpoints`` resumed after an interruption, the step budget, the wall-clock safety
cap, ``training_log.json`` and the one-rename final directory -- is :mod:`training.runs.bookkeeping`'s job.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from spacy_angel.errors import Errors, TrainingDataError
from spacy_angel.fileio import iter_jsonl
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.linking.linker import AngelLinker
from spacy_angel.retrieval.tfidf import NameIndex
from spacy_angel.seq2seq.loading import load_model_and_tokenizer
from spacy_angel.seq2seq.prompt import settle_context_window
from spacy_angel.trie.kb_trie import build_trie
from spacy_angel.types import Mention
from training.data.kb_subsets import HELD_OUT_FILE, held_out_record, sample_held_out_names
from training.examples.encoding import IGNORE_INDEX, seq2seq_example
from training.runs import bookkeeping as run
from training.runs import plateau
from training.settings import PositiveSettings, resolve

logger = logging.getLogger(__name__)


PathLike = Union[str, Path]


Example = Dict[str, List[int]]


EXAMPLE_KEYS = ("input_ids", "decoder_input_ids", "labels")


SCHEDULERS = ("linear", "cosine", "constant_with_warmup", "polynomial")


# ---------------------------------------------------------------------------- examples
def positive_targets(index: NameIndex, mention: Mention, kb: KnowledgeBase, k: int = 3) -> List[Tuple[str, str]]:
    """``(gold id, target name)`` pairs for one mention: the ``k`` closest names of each gold concept."""
    return index.top_names_for_concepts(mention.surface, [g for g in mention.gold_ids if g in kb], k=k)


def mention_examples(
    linker: AngelLinker,
    index: NameIndex,
    mentions: Sequence[Mention],
    synonyms_k: int = 3,
    progress: bool = False,
) -> Tuple[List[Example], Dict[str, int]]:
    """Seq2seq examples for corpus mentions (module doc) and counts of what was used or skipped."""
    conjunct = getattr(mentions, "conjunct", set())
    stats = {
        "mentions": len(mentions),
        "mentions_used": 0,
        "mentions_without_kb_id": 0,
        "gold_ids_not_in_kb": 0,
        "composite_mentions": 0,
        "conjunct_mentions": 0,
        "examples": 0,
    }
    examples: List[Example] = []
    iterator: Iterable[Mention] = mentions
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(mentions, desc="positive examples", unit="mention")
    for m in iterator:
        stats["gold_ids_not_in_kb"] += sum(1 for g in m.gold_ids if g not in linker.kb)
        targets = positive_targets(index, m, linker.kb, synonyms_k)
        if not targets:
            stats["mentions_without_kb_id"] += 1
            continue
        stats["mentions_used"] += 1
        if len({g for g, _ in targets}) > 1:
            stats["conjunct_mentions" if m in conjunct else "composite_mentions"] += 1
        for _, name in targets:
            examples.append(seq2seq_example(linker, m, name))
    stats["examples"] = len(examples)
    return examples, stats


def read_pretraining_jsonl(paths: Union[PathLike, Sequence[PathLike]]) -> Iterable[Tuple[int, Path, Dict[str, Any]]]:
    """Records of KB pre-training JSONL files (a file, a directory of ``*.jsonl``, or a list of them)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.jsonl"))
            if not found:
                raise TrainingDataError(Errors.E337.format(path=p))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise TrainingDataError(Errors.E338.format(path=p))
    for file in files:
        for lineno, rec in iter_jsonl(file, TrainingDataError):
            missing = [f for f in ("source", "prompt", "target") if not isinstance(rec.get(f), str) or not rec[f].strip()]
            if missing:
                raise TrainingDataError(Errors.E339.format(path=file, lineno=lineno, fields=", ".join(missing)))
            yield lineno, file, rec


def pretraining_examples(linker: AngelLinker, paths: Union[PathLike, Sequence[PathLike]]) -> List[Example]:
    """Seq2seq examples from KB pre-training JSONL (source/prompt text -> target name)."""
    return [seq2seq_example(linker, (rec["source"], rec["prompt"]), rec["target"]) for _, _, rec in read_pretraining_jsonl(paths)]


def kb_name_examples(linker: AngelLinker, index: NameIndex, held_out: AbstractSet[str] = frozenset()) -> List[Example]:
    """Every KB name as a bare mention; target: the TF-IDF-closest other name of its concept (or itself).

    Names in ``held_out`` are not used as mentions (they stay targets and decodable), so that
    ``train mine --held-out-kb-names`` can mine on names the model never read.
    """
    from training.examples.pretraining import _closest_other

    kb = linker.kb
    examples: List[Example] = []
    for kb_id in kb.concept_ids:
        idxs = index._name_indices_for(kb_id)
        if not idxs:
            continue
        closest = _closest_other(index, idxs) if len(idxs) > 1 else [0]
        for a, t in enumerate(closest):
            name = kb.names[idxs[a]]
            if name in held_out:
                continue
            examples.append(seq2seq_example(linker, Mention.bare(name, (kb_id,)), kb.names[idxs[t]]))
    return examples


def dev_examples(linker: AngelLinker, index: NameIndex, mentions: Sequence[Mention]) -> List[Example]:
    """One example per dev mention (its closest gold name), for the dev loss next to dev accuracy."""
    out: List[Example] = []
    for m in mentions:
        targets = positive_targets(index, m, linker.kb, 1)
        if targets:
            out.append(seq2seq_example(linker, m, targets[0][1]))
    return out


@dataclass
class Seq2SeqCollator:
    """Right-pads a batch: inputs and decoder inputs with the pad id, labels with -100.

    ``decoder_input_ids`` are passed explicitly (not derived from the labels) so the decoder sees
    the unmasked `` mention is`` prompt the labels leave out; masks mark the real tokens.
    """

    pad_token_id: int
    label_pad_id: int = IGNORE_INDEX

    def __call__(self, features: Sequence[Dict[str, Sequence[int]]]) -> Dict[str, torch.Tensor]:
        n = len(features)
        src_len = max(len(f["input_ids"]) for f in features)
        dec_len = max(len(f["decoder_input_ids"]) for f in features)
        batch = {
            "input_ids": torch.full((n, src_len), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((n, src_len), dtype=torch.long),
            "decoder_input_ids": torch.full((n, dec_len), self.pad_token_id, dtype=torch.long),
            "decoder_attention_mask": torch.zeros((n, dec_len), dtype=torch.long),
            "labels": torch.full((n, dec_len), self.label_pad_id, dtype=torch.long),
        }
        for i, f in enumerate(features):
            src, dec, lab = f["input_ids"], f["decoder_input_ids"], f["labels"]
            if len(lab) != len(dec):
                raise ValueError(Errors.E340.format(i=i, labels=len(lab), inputs=len(dec)))
            batch["input_ids"][i, : len(src)] = torch.as_tensor(src, dtype=torch.long)
            batch["attention_mask"][i, : len(src)] = 1
            batch["decoder_input_ids"][i, : len(dec)] = torch.as_tensor(dec, dtype=torch.long)
            batch["decoder_attention_mask"][i, : len(dec)] = 1
            batch["labels"][i, : len(lab)] = torch.as_tensor(lab, dtype=torch.long)
        return batch


# ---------------------------------------------------------------------------- training
def _training_data(
    linker: AngelLinker, index: NameIndex, mentions: Sequence[Mention], dev: Sequence[Mention], s: PositiveSettings,
    held_out: AbstractSet[str] = frozenset(),
) -> Tuple[List[Example], List[Example], Dict[str, int]]:
    """(train examples, dev examples, counts) for one run."""
    train, stats = mention_examples(linker, index, mentions, s.synonyms_k, progress=s.progress)
    if s.pretrain_data is not None:
        extra = pretraining_examples(linker, s.pretrain_data)
        stats["pretraining_examples"] = len(extra)
        train.extend(extra)
    if s.kb_names_as_mentions:
        extra = kb_name_examples(linker, index, held_out)
        stats["kb_name_examples"] = len(extra)
        stats["kb_names_held_out"] = len(held_out)
        train.extend(extra)
    if not train:
        raise TrainingDataError(Errors.E341.format(mentions=stats["mentions"], missing=stats["gold_ids_not_in_kb"]))
    stats["train_examples"] = len(train)
    stats["dev_mentions"] = len(dev)
    return train, dev_examples(linker, index, dev) if dev else [], stats


def _arguments(s: PositiveSettings, ckpt_dir: Path, steps: int, use_dev: bool) -> Any:
    """``Seq2SeqTrainingArguments`` for the settings: dev runs evaluate and checkpoint together."""
    from transformers import Seq2SeqTrainingArguments

    strategy = "steps" if s.eval_steps else "epoch"
    if use_dev:
        eval_strategy, save_strategy, save_every = strategy, strategy, s.eval_steps
    else:
        eval_strategy, save_every = "no", s.save_steps or s.eval_steps
        save_strategy = "steps" if save_every else "epoch"
    return Seq2SeqTrainingArguments(
        **run.common_arguments(s, ckpt_dir),
        weight_decay=s.weight_decay,
        warmup_ratio=s.warmup_ratio,
        warmup_steps=s.warmup_steps,
        lr_scheduler_type=s.lr_scheduler,
        label_smoothing_factor=s.label_smoothing,
        eval_strategy=eval_strategy,
        eval_steps=s.eval_steps if eval_strategy == "steps" else None,
        save_strategy=save_strategy,
        save_steps=save_every if save_strategy == "steps" else 500,
        save_total_limit=s.save_total_limit,
        load_best_model_at_end=use_dev,
        metric_for_best_model="dev_acc1" if use_dev else None,
        greater_is_better=True if use_dev else None,
        logging_steps=s.logging_steps or max(1, min(100, steps // 50)),
        logging_strategy="steps",
        dataloader_num_workers=0,
        disable_tqdm=not s.progress,
        predict_with_generate=False,
    )


def _check(s: PositiveSettings) -> None:
    if s.lr_scheduler not in SCHEDULERS:
        raise TrainingDataError(Errors.E342.format(scheduler=s.lr_scheduler))
    if s.plateau_restarts < 0 or not 0.0 < s.plateau_lr_factor < 1.0:
        raise TrainingDataError(Errors.E343.format(restarts=s.plateau_restarts, factor=s.plateau_lr_factor))
    if s.synonyms_k < 1:
        raise TrainingDataError(Errors.E344)
    if not 0.0 <= s.hold_out_kb_names < 1.0:
        raise TrainingDataError(Errors.E345.format(fraction=s.hold_out_kb_names))
    if s.hold_out_kb_names > 0 and not s.kb_names_as_mentions:
        raise TrainingDataError(Errors.E346)
    if s.device not in ("auto", "cpu", "cuda"):
        raise TrainingDataError(Errors.E301.format(device=s.device))
    if s.device == "cuda" and not torch.cuda.is_available():
        raise TrainingDataError(Errors.E302)


def _fit(
    model: Any, tokenizer: Any, kb: KnowledgeBase, trie: Any, train: Any, evalset: Any, dev: Sequence[Mention],
    s: PositiveSettings, output_dir: Path, callbacks: Sequence[Any], check_plateau: bool,
) -> Tuple[Any, Any, Optional[Path], Optional[plateau.PlateauStop]]:
    """One training attempt: the Trainer, its result, the checkpoint it resumed from, the plateau
    check (only while a restart is left: the last attempt trains to the end whatever it reaches)."""
    from transformers import Seq2SeqTrainer

    from training.evaluation.dev_accuracy import DevAccuracyCallback

    shaping = ("learning_rate", "batch_size", "seed", "label_smoothing", "warmup_ratio", "warmup_steps", "lr_scheduler", "weight_decay")
    run_config = {"data": run.rows_digest(train, EXAMPLE_KEYS), "dev": run.rows_digest(evalset, EXAMPLE_KEYS)}
    run_config.update({k: getattr(s, k) for k in shaping})
    ckpt_dir = output_dir / run.CHECKPOINT_DIR
    steps = run.total_steps(len(train), s.batch_size, s.epochs, s.max_steps)
    resume_from = run.prepare_checkpoints(ckpt_dir, run_config, s.resume, TrainingDataError, budget_steps=steps)
    use_dev = bool(evalset)
    all_callbacks = run.with_safety_cap(callbacks, s.max_minutes)
    stop = None
    if use_dev:
        all_callbacks.append(
            DevAccuracyCallback(
                tokenizer, kb, trie, dev, num_beams=s.num_beams, batch_size=max(s.batch_size, 16), context_window=s.context_window
            )
        )
        if check_plateau:
            stop = plateau.PlateauStop(s.plateau_min_dev_acc1)
            all_callbacks.append(stop)  # after the dev callback, which adds eval_dev_acc1
    trainer = Seq2SeqTrainer(
        model=model,
        args=_arguments(s, ckpt_dir, steps, use_dev),
        train_dataset=train,
        eval_dataset=evalset if use_dev else None,
        data_collator=Seq2SeqCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id),
        processing_class=tokenizer,
        callbacks=all_callbacks,
    )
    run.log_dicts_off(trainer, show_bar=s.progress)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return trainer, result, resume_from, stop


def train_positive(
    model_dir: PathLike,
    kb: KnowledgeBase,
    train_mentions: Sequence[Mention],
    output_dir: Optional[PathLike] = None,
    settings: Optional[PositiveSettings] = None,
    *,
    dev_mentions: Optional[Sequence[Mention]] = None,
    callbacks: Sequence[Any] = (),
    **overrides: Any,
) -> Path:
    """Fine-tune ``model_dir`` on positive targets; returns ``output_dir`` (model, tokenizer, log).

    ``settings`` (:class:`PositiveSettings`) holds every knob; keyword ``overrides`` of its field
    names still work (``max_steps=200``) and win over it. ``output_dir`` defaults to
    ``settings.output_dir``. With ``resume``, the last checkpoint in ``output_dir/checkpoints``
    is continued when data and weight-shaping settings match (budgets may change), so a killed
    run re-run with the same command ends with the weights of an uninterrupted one.
    Checkpoints are removed after a completed run unless ``keep_checkpoints`` or the safety cap
    cut it.
    """
    from transformers import set_seed

    from training.evaluation.dev_accuracy import temporary_linker

    s = resolve(PositiveSettings, settings, overrides)
    started = time.time()
    if output_dir is None and s.output_dir is None:
        raise TrainingDataError(Errors.E300)
    output_dir = run.check_output_dir(output_dir if output_dir is not None else s.output_dir, [model_dir], TrainingDataError)
    _check(s)
    run.pin_threads(s.threads)
    set_seed(s.seed)
    model, tokenizer = load_model_and_tokenizer(model_dir, device="cpu")
    # the window asked for, else the start model's; saved in config.json as the linker's default
    s = dataclasses.replace(s, context_window=settle_context_window(model, s.context_window))
    model.train()
    trie = build_trie(kb, tokenizer)
    index = NameIndex(kb).fit()
    dev = [m for m in (dev_mentions or []) if any(g in kb for g in m.gold_ids)]
    held = sample_held_out_names(kb, s.hold_out_kb_names, s.seed) if s.hold_out_kb_names > 0 else []
    with temporary_linker(model, tokenizer, kb, trie, context_window=s.context_window, num_beams=s.num_beams) as linker:
        train, evalset, stats = _training_data(linker, index, train_mentions, dev, s, {n for n, _ in held})
    logger.info("positive training data: %s", stats)

    restarts = plateau.read_restarts(output_dir)
    fresh = True  # the loaded model has not been trained yet
    while True:
        attempt = dataclasses.replace(s, learning_rate=s.learning_rate * s.plateau_lr_factor ** len(restarts))
        if not fresh:  # start again from the same model (the Trainer re-seeds itself)
            model, tokenizer = load_model_and_tokenizer(model_dir, device="cpu")
            settle_context_window(model, s.context_window)
            model.train()
        fresh = False
        check = len(restarts) < s.plateau_restarts
        trainer, result, resume_from, stop = _fit(model, tokenizer, kb, trie, train, evalset, dev, attempt, output_dir, callbacks, check)
        if stop is None or stop.verdict is None:
            break
        next_lr = attempt.learning_rate * s.plateau_lr_factor
        plateau.record_restart(output_dir, restarts, stop.verdict, attempt.learning_rate, next_lr)
    settings_log = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("output_dir", "progress")}
    log = run.training_log(
        trainer,
        {
            "data": stats,
            "train_metrics": result.metrics,
            "wall_time_s": round(time.time() - started, 2),
            "resumed_from": resume_from.name if resume_from else None,
            "model_dir": str(model_dir),
            "settings": settings_log,
            "learning_rate_used": attempt.learning_rate,
            "plateau_restarts": restarts,
        },
    )
    trainer.model.tie_weights()  # the best-checkpoint reload only restores the shared embedding
    trainer.model.eval()
    extra = {HELD_OUT_FILE: held_out_record(held, s.hold_out_kb_names, s.seed)} if s.hold_out_kb_names > 0 else None
    run.finalize_output(
        trainer.model, tokenizer, output_dir, log, keep_checkpoints=s.keep_checkpoints or log["stopped_by_time_budget"], kb=kb,
        extra_json=extra,
    )
    logger.info("positive training done: %s (step %d, %.1fs)", output_dir, log["global_step"], log["wall_time_s"])
    return output_dir
