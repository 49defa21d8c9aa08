"""Restart a positive run that is stuck on the loss plateau, at a lower learning rate.

Why: from scratch, the positive stage can sit on a loss plateau (near 6.9 for the CPU model) for
its whole budget and finish with a useless model. Measured on NCBI-disease (docs/results.md): the
held-out-names run at lr 7e-4, seed 0, linked 0.0% of dev at every evaluation of its 2000 steps;
at lr 4e-4 the same recipe left the plateau by step ~250 and reached dev 90.06. The recipe must
run unchanged on benchmarks we do not see, so a stuck run is caught at its first dev evaluation
(every recipe run that left the plateau linked 24-80% of dev there, the stuck one 0%), stopped,
and started again from the same model and seed with the learning rate scaled down. The verdict
reads only computed values, so a run and its re-run take the same path. Each restart is written
to ``OUTPUT/plateau_restarts.json`` before the next attempt starts, so a killed run re-run with the
same command resumes the attempt it was in, and the final ``training_log.json`` lists them.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from spacy_angel.errors import Errors, Warnings
from spacy_angel.fileio import atomic_write_json
from training.runs import distributed
from training.runs.bookkeeping import CHECKPOINT_DIR

logger = logging.getLogger(__name__)


RESTARTS_FILE = "plateau_restarts.json"


class PlateauStop(TrainerCallback):
    """Stops the run at its first dev evaluation when dev Acc@1 is below ``min_dev_acc1``.

    Must come after :class:`training.evaluation.dev_accuracy.DevAccuracyCallback`, which adds ``eval_dev_acc1``
    to the metrics. A resumed run whose history already holds a dev evaluation is past the check.
    """

    def __init__(self, min_dev_acc1: float) -> None:
        self.min_dev_acc1 = min_dev_acc1
        self.verdict: Optional[Dict[str, Any]] = None

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: Optional[Dict[str, float]] = None, **kwargs: Any
    ) -> None:
        if not metrics or "eval_dev_acc1" not in metrics:
            return
        earlier = [h for h in state.log_history if "eval_dev_acc1" in h and h.get("step") != state.global_step]
        if earlier or metrics["eval_dev_acc1"] >= self.min_dev_acc1:
            return
        self.verdict = {"step": state.global_step, "dev_acc1": metrics["eval_dev_acc1"]}
        loss = [h["loss"] for h in state.log_history if "loss" in h]
        if loss:
            self.verdict["loss"] = loss[-1]
        control.should_training_stop = True


def read_restarts(output_dir: Path) -> List[Dict[str, Any]]:
    """The restarts an earlier, interrupted invocation of this run already made (none: [])."""
    path = output_dir / RESTARTS_FILE
    if not path.is_file():
        return []
    try:
        restarts = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(Errors.E378.format(path=path, err=err)) from err
    if not isinstance(restarts, list):
        raise ValueError(Errors.E379.format(path=path))
    return restarts


def record_restart(
    output_dir: Path, restarts: List[Dict[str, Any]], verdict: Dict[str, Any], learning_rate: float, next_learning_rate: float
) -> None:
    """Append the stuck attempt and write the list before the next attempt starts; under
    ``accelerate launch`` every process appends, the main one writes and drops the checkpoints."""
    restarts.append({**verdict, "learning_rate": learning_rate})
    if distributed.is_main_process():
        atomic_write_json(output_dir / RESTARTS_FILE, restarts, indent=1)
        shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)  # ours; another lr cannot resume them
    distributed.wait_for_everyone()
    logger.warning(
        Warnings.W103.format(acc=verdict["dev_acc1"], step=int(verdict["step"]), lr=learning_rate, next_lr=next_learning_rate)
    )
