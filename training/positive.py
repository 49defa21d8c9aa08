"""Positive-only training (ANGEL stage 1): teach the decoder to generate gold KB names.

Targets (ANGEL, Kim et al. 2025): for each training mention and each of its gold concepts, the
``synonyms_k`` (default 3) names of that concept most similar to the mention under character
3-gram TF-IDF (:meth:`training.tfidf.NameIndex.top_names_for_concept`); one
``(mention, name)`` example per target. Several gold ids:

* composite mentions (``D001943|D010051``, "breast and ovarian cancers") yield one example set
  per concept -- the decoder emits one name, and the mention is correct if it emits any of them;
* conjunct mentions (``D007153+D040181``, in ``MentionList.is_conjunct``) are treated the same
  way: the model cannot emit "both", and evaluation (ANGEL/BioSyn convention) counts any gold id
  as correct, so each concept's names are a valid target. They are counted in the stats.

Gold ids missing from the KB are skipped (counted); a mention left without any KB id adds nothing.

Optional extra examples: KB pre-training JSONL (``training.pretraining``: ``source``,
``prompt``, ``target``), and "KB names as mentions" (each KB name as a bare mention whose target
is the TF-IDF-closest *other* name of its concept, or itself for a one-name concept) -- useful
when training from scratch, where the model has never seen most KB names.

The loop is ``transformers.Seq2SeqTrainer``: label smoothing, warmup + linear/cosine decay,
checkpoints under ``output_dir/checkpoints`` (resumed after an interruption), dev Acc@1 with the
constrained decoder to keep the best checkpoint (:mod:`training.dev_eval`), and a wall-time
budget. The final model + tokenizer and ``training_log.json`` replace ``output_dir`` in one rename.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from spacy_angel.fileio import atomic_write_json, iter_jsonl
from spacy_angel.hf import load_model_and_tokenizer
from spacy_angel.kb import KnowledgeBase
from spacy_angel.linker import AngelLinker
from spacy_angel.name_trie import build_trie
from spacy_angel.modeling import save_pretrained_atomic
from spacy_angel.types import Mention

from .examples import IGNORE_INDEX, seq2seq_example
from .tfidf import NameIndex

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
Example = Dict[str, List[int]]
CHECKPOINT_DIR = "checkpoints"
RUN_CONFIG = "run_config.json"
LOG_FILE = "training_log.json"


class TrainingDataError(ValueError):
    """Training input that cannot be used; the message names the file/line or the reason."""


# ---------------------------------------------------------------------------- examples
def positive_targets(index: NameIndex, mention: Mention, kb: KnowledgeBase, k: int = 3) -> List[Tuple[str, str]]:
    """``(gold id, target name)`` pairs for one mention: the ``k`` closest names of each gold concept."""
    out: List[Tuple[str, str]] = []
    seen = set()
    for gold in mention.gold_ids:
        if gold not in kb:
            continue
        for name in index.top_names_for_concept(mention.surface, gold, k=k):
            if name not in seen:  # two gold ids of one concept (aliases) share names
                seen.add(name)
                out.append((gold, name))
    return out


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
                raise TrainingDataError(f"no *.jsonl files in pre-training directory {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise TrainingDataError(f"pre-training data {p} does not exist")
    for file in files:
        for lineno, rec in iter_jsonl(file, TrainingDataError):
            missing = [f for f in ("source", "prompt", "target") if not isinstance(rec.get(f), str) or not rec[f].strip()]
            if missing:
                raise TrainingDataError(f"{file}:{lineno}: missing or empty field(s) {', '.join(missing)}")
            yield lineno, file, rec


def pretraining_examples(linker: AngelLinker, paths: Union[PathLike, Sequence[PathLike]]) -> List[Example]:
    """Seq2seq examples from KB pre-training JSONL (source/prompt text -> target name)."""
    return [seq2seq_example(linker, (rec["source"], rec["prompt"]), rec["target"]) for _, _, rec in read_pretraining_jsonl(paths)]


def kb_name_examples(linker: AngelLinker, index: NameIndex) -> List[Example]:
    """Every KB name as a bare mention; target: the TF-IDF-closest other name of its concept (or itself)."""
    from .pretraining import _closest_other

    kb = linker.kb
    examples: List[Example] = []
    for kb_id in kb.concept_ids:
        idxs = index._name_indices_for(kb_id)
        if not idxs:
            continue
        closest = _closest_other(index, idxs) if len(idxs) > 1 else [0]
        for a, t in enumerate(closest):
            name = kb.names[idxs[a]]
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
                raise ValueError(f"example {i}: {len(lab)} labels for {len(dec)} decoder inputs")
            batch["input_ids"][i, : len(src)] = torch.as_tensor(src, dtype=torch.long)
            batch["attention_mask"][i, : len(src)] = 1
            batch["decoder_input_ids"][i, : len(dec)] = torch.as_tensor(dec, dtype=torch.long)
            batch["decoder_attention_mask"][i, : len(dec)] = 1
            batch["labels"][i, : len(lab)] = torch.as_tensor(lab, dtype=torch.long)
        return batch


# ---------------------------------------------------------------------------- bookkeeping
def peak_rss_mb(include_children: bool = False) -> float:
    """Peak resident memory of this process (or of it and its finished children) in MiB.

    ``ru_maxrss`` is KiB on Linux, bytes on macOS.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if include_children:
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _examples_digest(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        for key in ("input_ids", "decoder_input_ids", "labels"):
            digest.update(",".join(map(str, ex[key])).encode())
            digest.update(b";")
        digest.update(b"\n")
    return digest.hexdigest()


def _last_checkpoint(directory: Path) -> Optional[Path]:
    from transformers.trainer_utils import get_last_checkpoint

    if not directory.is_dir():
        return None
    last = get_last_checkpoint(str(directory))
    return Path(last) if last else None


def training_log(trainer: Any, extra: Dict[str, Any]) -> Dict[str, Any]:
    """Loss curve, dev curve and run facts from the Trainer state, plus ``extra``."""
    history = trainer.state.log_history
    loss = [{"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate")} for h in history if "loss" in h]
    dev = [
        {k: h[k] for k in ("step", "eval_loss", "eval_dev_acc1", "eval_dev_acc5") if k in h}
        for h in history
        if "eval_dev_acc1" in h or "eval_loss" in h
    ]
    best = trainer.state.best_model_checkpoint
    return {
        "loss": loss,
        "dev": dev,
        "global_step": trainer.state.global_step,
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": Path(best).name if best else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **extra,
    }


def finalize_output(
    model: Any, tokenizer: Any, output_dir: Path, log: Dict[str, Any], keep_checkpoints: bool
) -> Path:
    """Write model + tokenizer + log to a staging dir, carry the checkpoints over if kept, then rename."""
    staging = output_dir.parent / f".{output_dir.name}.final-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    save_pretrained_atomic(model, tokenizer, staging)
    atomic_write_json(staging / LOG_FILE, log, indent=1)
    ckpt = output_dir / CHECKPOINT_DIR
    if ckpt.exists():
        if keep_checkpoints:
            os.replace(ckpt, staging / CHECKPOINT_DIR)
        else:
            shutil.rmtree(ckpt)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(staging, output_dir)
    return output_dir


# ---------------------------------------------------------------------------- training
def train_positive(
    model_dir: PathLike,
    kb: KnowledgeBase,
    train_mentions: Sequence[Mention],
    output_dir: PathLike,
    *,
    dev_mentions: Optional[Sequence[Mention]] = None,
    synonyms_k: int = 3,
    pretrain_data: Optional[Union[PathLike, Sequence[PathLike]]] = None,
    kb_names_as_mentions: bool = False,
    epochs: float = 3.0,
    learning_rate: float = 3e-4,
    batch_size: int = 32,
    max_steps: int = -1,
    max_minutes: Optional[float] = None,
    label_smoothing: float = 0.1,
    warmup_ratio: float = 0.05,
    eval_steps: Optional[int] = None,
    seed: int = 0,
    resume: bool = True,
    num_beams: int = 5,
    context_window: int = 32,
    lr_scheduler: str = "linear",
    weight_decay: float = 0.01,
    save_steps: Optional[int] = None,
    save_total_limit: int = 2,
    logging_steps: Optional[int] = None,
    keep_checkpoints: bool = False,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
) -> Path:
    """Fine-tune ``model_dir`` on positive targets; returns ``output_dir`` (model, tokenizer, log).

    ``resume``: continue from the last checkpoint in ``output_dir/checkpoints`` when the data and
    optimisation settings match the interrupted run (budgets -- ``epochs``, ``max_steps``,
    ``max_minutes`` -- may change); ``resume=False`` discards old checkpoints. Checkpoints are
    removed after a completed run unless ``keep_checkpoints`` or the time budget stopped it.
    """
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed

    from .dev_eval import DevAccuracyCallback, MaxMinutesCallback, temporary_linker

    started = time.time()
    output_dir = Path(output_dir)
    if output_dir.resolve() == Path(model_dir).resolve():
        raise TrainingDataError(f"output directory {output_dir} is the input model directory: choose another")
    if lr_scheduler not in ("linear", "cosine", "constant_with_warmup", "polynomial"):
        raise TrainingDataError(f"unknown lr_scheduler {lr_scheduler!r}: linear, cosine, polynomial or constant_with_warmup")
    if synonyms_k < 1:
        raise TrainingDataError("synonyms_k must be at least 1")
    set_seed(seed)
    model, tokenizer = load_model_and_tokenizer(model_dir, device="cpu")
    model.train()
    trie = build_trie(kb, tokenizer)
    index = NameIndex(kb).fit()

    with temporary_linker(model, tokenizer, kb, trie, context_window=context_window, num_beams=num_beams) as linker:
        train, stats = mention_examples(linker, index, train_mentions, synonyms_k, progress=progress)
        if pretrain_data is not None:
            extra = pretraining_examples(linker, pretrain_data)
            stats["pretraining_examples"] = len(extra)
            train.extend(extra)
        if kb_names_as_mentions:
            extra = kb_name_examples(linker, index)
            stats["kb_name_examples"] = len(extra)
            train.extend(extra)
        dev = list(dev_mentions or [])
        dev = [m for m in dev if any(g in kb for g in m.gold_ids)]
        evalset = dev_examples(linker, index, dev) if dev else []
    if not train:
        raise TrainingDataError(
            f"no training examples: {stats['mentions']} mentions, none with a gold id in the KB "
            f"({stats['gold_ids_not_in_kb']} ids missing)"
        )
    stats["train_examples"] = len(train)
    stats["dev_mentions"] = len(dev)
    logger.info("positive training data: %s", stats)

    run_config = {
        "data": _examples_digest(train),
        "dev": _examples_digest(evalset),
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "seed": seed,
        "label_smoothing": label_smoothing,
        "warmup_ratio": warmup_ratio,
        "lr_scheduler": lr_scheduler,
        "weight_decay": weight_decay,
    }
    ckpt_dir = output_dir / CHECKPOINT_DIR
    resume_from: Optional[Path] = None
    if ckpt_dir.exists():
        if resume and _last_checkpoint(ckpt_dir) is not None:
            try:
                previous = json.loads((ckpt_dir / RUN_CONFIG).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                previous = None
            if previous != run_config:
                changed = sorted(k for k in run_config if previous is None or previous.get(k) != run_config[k])
                raise TrainingDataError(
                    f"{ckpt_dir} holds checkpoints of a different run (changed: {', '.join(changed)}); "
                    "resume with the same data and settings, or pass resume=False (--no-resume) to start over"
                )
            resume_from = _last_checkpoint(ckpt_dir)
            logger.info("resuming from %s", resume_from)
        else:
            shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ckpt_dir / RUN_CONFIG, run_config, indent=1)

    steps_per_epoch = max(1, math.ceil(len(train) / batch_size))
    total_steps = max_steps if max_steps > 0 else max(1, math.ceil(steps_per_epoch * epochs))
    if logging_steps is None:
        logging_steps = max(1, min(100, total_steps // 50))
    use_dev = bool(evalset)
    strategy = "steps" if eval_steps else "epoch"
    if use_dev:
        eval_strategy, save_strategy = strategy, strategy
        save_every = eval_steps
    else:
        eval_strategy = "no"
        save_every = save_steps or eval_steps
        save_strategy = "steps" if save_every else "epoch"
    args = Seq2SeqTrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        lr_scheduler_type=lr_scheduler,
        label_smoothing_factor=label_smoothing,
        eval_strategy=eval_strategy,
        eval_steps=eval_steps if eval_strategy == "steps" else None,
        save_strategy=save_strategy,
        save_steps=save_every if save_strategy == "steps" else 500,
        save_total_limit=save_total_limit,
        load_best_model_at_end=use_dev,
        metric_for_best_model="dev_acc1" if use_dev else None,
        greater_is_better=True if use_dev else None,
        logging_steps=logging_steps,
        logging_strategy="steps",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        save_safetensors=True,
        disable_tqdm=not progress,
        push_to_hub=False,
        predict_with_generate=False,
    )
    all_callbacks: List[Any] = list(callbacks)
    if use_dev:
        all_callbacks.append(
            DevAccuracyCallback(
                tokenizer, kb, trie, dev, num_beams=num_beams, batch_size=max(batch_size, 16), context_window=context_window
            )
        )
    budget = MaxMinutesCallback(max_minutes) if max_minutes is not None else None
    if budget is not None:
        all_callbacks.append(budget)
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evalset if use_dev else None,
        data_collator=Seq2SeqCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id),
        processing_class=tokenizer,
        callbacks=all_callbacks,
    )
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    stopped = bool(budget is not None and budget.stopped)
    log = training_log(
        trainer,
        {
            "data": stats,
            "train_metrics": result.metrics,
            "wall_time_s": round(time.time() - started, 2),
            "stopped_by_time_budget": stopped,
            "resumed_from": resume_from.name if resume_from else None,
            "model_dir": str(model_dir),
            "settings": {
                "synonyms_k": synonyms_k,
                "epochs": epochs,
                "max_steps": max_steps,
                "max_minutes": max_minutes,
                "eval_steps": eval_steps,
                "num_beams": num_beams,
                "context_window": context_window,
                **{k: v for k, v in run_config.items() if k not in ("data", "dev")},
            },
        },
    )
    trainer.model.tie_weights()  # the best-checkpoint reload only restores the shared embedding
    trainer.model.eval()
    finalize_output(trainer.model, tokenizer, output_dir, log, keep_checkpoints=keep_checkpoints or stopped)
    logger.info("positive training done: %s (step %d, %.1fs)", output_dir, log["global_step"], log["wall_time_s"])
    return output_dir
