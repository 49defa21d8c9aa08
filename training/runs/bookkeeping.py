"""Run bookkeeping shared by every training stage: checkpoints, resume, step budgets, the safety
cap, training logs, peak memory and the atomic final output directory.

Why a room of its own: the positive and preference stages differ in what they train, not in how
a run is kept. A run's length is its step count (``max_steps`` or epochs) and its seed, so it
gives the same weights anywhere; the wall-clock cap only guards against a runaway run, and when
it cuts one it says so in the log, in ``training_log.json`` and on stdout.
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
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Type, Union

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from spacy_angel.apps.model_card import info_from_training_log, kb_summary, write_model_card
from spacy_angel.errors import Errors, Warnings
from spacy_angel.fileio import atomic_directory, atomic_write_json, check_output_directory
from spacy_angel.seq2seq.loading import save_model_files
from training.runs import distributed

logger = logging.getLogger(__name__)


PathLike = Union[str, Path]


CHECKPOINT_DIR = "checkpoints"


RUN_CONFIG = "run_config.json"


LOG_FILE = "training_log.json"


# ---------------------------------------------------------------------------- facts
def pin_threads(threads: Optional[int]) -> int:
    """Set torch's CPU thread count when ``threads`` is given; return the count in use.

    Why: float sums split over another number of threads round differently, so the same seed and
    step count give other weights on a machine with another core count (measured: 12 positive
    steps at 1 and at 2 threads wrote different ``model.safetensors``). A fixed count makes a
    recipe's models the same on a laptop and on a 16-core server; the count is logged per run.
    """
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(Errors.E380.format(threads=threads))
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def peak_rss_mb(include_children: bool = False) -> float:
    """Peak resident memory of this process (or of it and its finished children) in MiB.

    ``ru_maxrss`` is KiB on Linux, bytes on macOS.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if include_children:
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rows_digest(rows: Iterable[Mapping[str, Sequence[int]]], keys: Sequence[str]) -> str:
    """SHA-256 of token rows: two runs may share checkpoints only when their data is the same."""
    digest = hashlib.sha256()
    for row in rows:
        for key in keys:
            digest.update(",".join(map(str, row[key])).encode())
            digest.update(b";")
        digest.update(b"\n")
    return digest.hexdigest()


def total_steps(num_examples: int, batch_size: int, epochs: float, max_steps: int) -> int:
    """Optimiser steps of a run: ``max_steps`` when set, else ``epochs`` over the examples."""
    if max_steps > 0:
        return max_steps
    batch_size *= distributed.world_size() * distributed.accumulation_steps()  # one step = the global batch
    return max(1, math.ceil(max(1, math.ceil(num_examples / batch_size)) * epochs))


def uses_cuda(settings: Any) -> bool:
    """Whether a stage trains on CUDA: asked for (``device`` not ``cpu``) and present."""
    import torch

    return settings.device != "cpu" and torch.cuda.is_available()


def common_arguments(settings: Any, output_dir: PathLike) -> Dict[str, Any]:
    """Trainer arguments every stage shares (HF ``TrainingArguments``, TRL's ``DPOConfig`` /
    ``CPOConfig``): the step budget, batch, seeds, device, and no hub or tracker traffic."""
    cuda = uses_cuda(settings)
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=distributed.accumulation_steps(),  # the DeepSpeed config's, under accelerate launch
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        data_seed=settings.seed,
        report_to="none",
        push_to_hub=False,
        use_cpu=not cuda,
        remove_unused_columns=False,
        dataloader_pin_memory=cuda,
        save_safetensors=True,
    )


# ---------------------------------------------------------------------------- output directory
#: Files or folders that mark a directory as an earlier (finished or interrupted) training output.
OUTPUT_MARKERS = ("config.json", LOG_FILE, "iterative_log.json", CHECKPOINT_DIR)


def check_output_dir(output_dir: PathLike, inputs: Sequence[Optional[PathLike]], error: Type[Exception]) -> Path:
    """``output_dir`` as a Path, refused when it is one of the input model directories, a file, or a
    non-empty directory that no training stage wrote: the finished model replaces the whole
    directory (:func:`finalize_output`), so a mistyped ``--output`` must not delete a user's files."""
    out = Path(output_dir)
    for source in inputs:
        if source is not None and Path(source).exists() and out.resolve() == Path(source).resolve():
            raise error(Errors.E381.format(path=out, source=source))
    try:
        check_output_directory(out, OUTPUT_MARKERS)
    except OSError as err:
        raise error(str(err)) from None
    return out


def last_checkpoint(directory: Path, below: Optional[int] = None) -> Optional[Path]:
    """The newest whole ``checkpoint-N`` in ``directory`` (None when there is none).

    Whole = it holds ``trainer_state.json``, which the Trainer writes last: its checkpoints are written
    in place, so a run killed mid-save leaves a newest folder without it (transformers'
    ``get_last_checkpoint`` would pick that one, and every resume would then fail; tests/test_kills.py).
    ``below``: only checkpoints of an earlier step than that."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not directory.is_dir():
        return None
    whole = []
    try:
        for entry in directory.iterdir():
            step = entry.name[len(PREFIX_CHECKPOINT_DIR) + 1:]
            if entry.name.startswith(PREFIX_CHECKPOINT_DIR + "-") and step.isdigit() and (entry / "trainer_state.json").is_file():
                if below is None or int(step) < below:
                    whole.append((int(step), entry))
    except FileNotFoundError:  # rank 0 removed it meanwhile (see prepare_checkpoints)
        return None
    return max(whole)[1] if whole else None


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def prepare_checkpoints(
    ckpt_dir: Path, run_config: Dict[str, Any], resume: bool, error: Type[Exception],
    budget_steps: Optional[int] = None,
) -> Optional[Path]:
    """Make ``ckpt_dir`` ready for a run; returns the checkpoint to resume from, if any.

    With ``resume``, the last checkpoint is continued only when ``run_config`` (data digest and
    the settings that shape the weights; not the budgets) equals the interrupted run's, since
    other data or settings would silently mix two runs. Otherwise old checkpoints are removed.
    A checkpoint at or past ``budget_steps`` (a run killed after its last save) is not resumed: the
    Trainer would train one step more before it checks its budget. The newest earlier checkpoint is
    resumed instead, or the run starts over; training is seeded, so the model is the same.
    """
    resume_from: Optional[Path] = None
    if ckpt_dir.exists():
        if resume and last_checkpoint(ckpt_dir) is not None:
            try:
                previous = json.loads((ckpt_dir / RUN_CONFIG).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                previous = None
            if previous != run_config:
                changed = sorted(k for k in run_config if previous is None or previous.get(k) != run_config[k])
                raise error(Errors.E382.format(path=ckpt_dir, changed=", ".join(changed)))
            resume_from = last_checkpoint(ckpt_dir)
            if budget_steps and resume_from is not None and _step(resume_from) >= budget_steps:
                resume_from = last_checkpoint(ckpt_dir, below=budget_steps)
                if resume_from is None and distributed.is_main_process():
                    shutil.rmtree(ckpt_dir, ignore_errors=True)  # only the last step's: start over
            logger.info("resuming from %s", resume_from)
        elif distributed.is_main_process():  # under accelerate launch, the others only read
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    if distributed.is_main_process():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(ckpt_dir / RUN_CONFIG, run_config, indent=1)
    return resume_from


def finalize_output(
    model: Any, tokenizer: Any, output_dir: Path, log: Dict[str, Any], keep_checkpoints: bool, kb: Any = None,
    extra_json: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write model + tokenizer + log + model card (README.md) to a temp folder, carry the
    checkpoints over if kept, then rename it in (``fileio.atomic_directory``). ``kb`` adds its size and fingerprint to log and card;
    ``extra_json`` maps more file names to JSON content written beside them.

    Under ``accelerate launch`` only the main process writes; every process returns once it has."""
    if not distributed.is_main_process():
        distributed.wait_for_everyone()
        return output_dir
    if kb is not None:
        log = {**log, "kb": kb_summary(kb)}
    ckpt = output_dir / CHECKPOINT_DIR
    # atomic_directory: the previous output is renamed aside, not deleted, until the new one is in place,
    # and a run killed anywhere here is tidied (and the previous output put back) by the next run's lock
    with atomic_directory(output_dir) as staging:
        save_model_files(model, tokenizer, staging)
        atomic_write_json(staging / LOG_FILE, log, indent=1)
        for name, content in (extra_json or {}).items():
            atomic_write_json(staging / name, content, indent=1)
        write_model_card(staging, info_from_training_log(log))
        if ckpt.exists() and keep_checkpoints:  # else they go with the previous folder
            os.replace(ckpt, staging / CHECKPOINT_DIR)
    distributed.wait_for_everyone()
    return output_dir


# ---------------------------------------------------------------------------- logs
def plateau_warning(log: Mapping[str, Any]) -> Optional[str]:
    """A warning when a run with a dev set ends linking (almost) no dev mention.

    Why: from scratch, the positive stage can stay on a loss plateau (near 6.9 for the CPU model)
    for its whole budget, depending on data order and learning rate (docs/results.md); it then
    finishes normally with a useless model, and the stages after it would carry on silently.
    """
    best = log.get("best_metric")
    if best is None or best >= 0.01:
        return None
    losses = [entry["loss"] for entry in log.get("loss", [])]
    flat = f"; training loss {losses[0]:.2f} -> {losses[-1]:.2f}" if losses else ""
    return Warnings.W105.format(best=best, flat=flat)


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
    cap = safety_cap(trainer)
    return {
        "loss": loss,
        "dev": dev,
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": Path(best).name if best else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": pin_threads(None),
        "stopped_by_time_budget": bool(cap is not None and cap.stopped),
        "safety_cap": cap.report() if cap is not None and cap.stopped else None,
        **extra,
    }


# ---------------------------------------------------------------------------- the safety cap
class MaxMinutesCallback(TrainerCallback):
    """The wall-clock SAFETY cap: stops a run that outlives ``max_minutes`` and says so.

    Not a budget: the run's length is its step count. When the cap cuts a run it logs a warning,
    prints one line to stdout, asks for a checkpoint (so the same command resumes with a larger
    cap) and for an evaluation when one is configured (so the last weights compete for "best").
    """

    def __init__(self, max_minutes: float) -> None:
        if max_minutes < 0:
            raise ValueError(Errors.E383.format(max_minutes=max_minutes))
        self.max_minutes = float(max_minutes)
        self.started: Optional[float] = None
        self.stopped = False
        self.stopped_at: Optional[int] = None
        self.max_steps: Optional[int] = None

    def report(self) -> str:
        return Warnings.W104.format(minutes=self.max_minutes, step=self.stopped_at, max_steps=self.max_steps)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.started = time.monotonic()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.started is None:
            self.started = time.monotonic()
        over = distributed.agree(time.monotonic() - self.started >= self.max_minutes * 60.0)  # same step on every rank
        if not over or state.global_step >= state.max_steps:
            return
        if not self.stopped:
            self.stopped, self.stopped_at, self.max_steps = True, state.global_step, state.max_steps
            logger.warning(self.report())
            if distributed.is_main_process():
                print(f"WARNING: {self.report()}", flush=True)
        control.should_training_stop = True
        control.should_save = True
        if args.eval_strategy != "no":
            control.should_evaluate = True


def safety_cap(trainer: Any) -> Optional[MaxMinutesCallback]:
    """The trainer's safety-cap callback, if it has one."""
    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MaxMinutesCallback)), None)


def with_safety_cap(callbacks: Sequence[Any], max_minutes: Optional[float]) -> list:
    """``callbacks`` plus the safety cap when ``max_minutes`` is set."""
    out = list(callbacks)
    if max_minutes is not None:
        out.append(MaxMinutesCallback(max_minutes))
    return out


def log_dicts_off(trainer: Any, show_bar: bool) -> None:
    """No dict per logging step on the console: HF prints each one (``PrinterCallback`` without a bar,
    ``ProgressCallback.on_log`` with one), hundreds in a long run, while the loss curve is kept in
    ``training_log.json`` anyway. With ``show_bar``, a progress bar stays."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarWithoutLogDicts(ProgressCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            pass

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if show_bar:
        trainer.add_callback(BarWithoutLogDicts)


def quiet_libraries() -> None:
    """Only our own progress on the console of a long build: transformers' and datasets' notices go
    to ERROR, and the Trainer's per-checkpoint note about mtime ordering (a fact of this filesystem,
    harmless: it then orders checkpoints by number) is not repeated at every save."""
    import warnings

    for noisy in ("transformers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="mtime may not be reliable")
