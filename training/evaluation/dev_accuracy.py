"""Dev-set accuracy with the real constrained decoder, for checkpoint selection during training.

Why not the dev loss: ANGEL selects checkpoints on linking accuracy, and the loss of one gold
name says little about whether beam search over the KB trie ranks that name first. So every
evaluation decodes the dev mentions exactly as inference does (:class:`AngelLinker`).

How the metric reaches the Trainer (transformers 4.53, checked in ``Trainer.evaluate``):
``evaluate`` builds ``output.metrics``, logs a *copy* of it, calls ``on_evaluate(..., metrics)``
and then returns that same dict object to ``_maybe_log_save_evaluate``, which hands it to
``_determine_best_metric`` before saving the checkpoint. A callback that adds keys to
``metrics`` in place therefore makes them visible to ``metric_for_best_model`` and
``load_best_model_at_end``; only the already-written log entry misses them, so the callback
also adds them to the last ``state.log_history`` entry (``tests/training/stages/test_positive.py`` proves both).

The last step is evaluated too (:meth:`DevAccuracyCallback.on_step_end`): HF's flow evaluates
only at multiples of ``eval_steps`` but saves the last step anyway, so a run of 750 steps with
``eval_steps`` 500 used to end as its step-500 checkpoint, the only one with a score, silently
dropping the steps the user asked for.

The linker hooks the decoder's position embedding (per-row shifts for left-padded prompts);
:func:`temporary_linker` puts the original module object back and restores train/eval mode, so
whatever the linker does there, the model trains and saves (parameter names included) as before.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Sequence

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.linking.linker import AngelLinker
from spacy_angel.trie.token_trie import TokenTrie
from spacy_angel.types import Mention
from training.evaluation.metrics import accuracy_at_k

logger = logging.getLogger(__name__)


@contextmanager
def temporary_linker(
    model: Any, tokenizer: Any, kb: KnowledgeBase, trie: Optional[TokenTrie] = None, **kwargs: Any
) -> Iterator[AngelLinker]:
    """An :class:`AngelLinker` on a model that is being trained, undone on exit.

    Restores the decoder's original position-embedding module (the linker swaps in a wrapper)
    and the model's train/eval mode, so the model saves and trains exactly as before.
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    original = getattr(decoder, "embed_positions", None) if decoder is not None else None
    was_training = model.training
    try:
        yield AngelLinker(model, tokenizer, kb, trie, **kwargs)
    finally:
        if decoder is not None and original is not None:
            decoder.embed_positions = original
        model.train(was_training)


def dev_accuracy(
    model: Any,
    tokenizer: Any,
    kb: KnowledgeBase,
    trie: Optional[TokenTrie],
    mentions: Sequence[Mention],
    num_beams: int = 5,
    batch_size: int = 64,
    context_window: Optional[int] = None,
) -> Dict[str, float]:
    """``{"acc1", "acc5"}`` of constrained beam search on ``mentions`` (Acc@5 caps at ``num_beams``; ``context_window``
    None: the model's training window)."""
    if not mentions:
        return {"acc1": 0.0, "acc5": 0.0}
    with temporary_linker(
        model, tokenizer, kb, trie, num_beams=num_beams, batch_size=batch_size, context_window=context_window
    ) as linker:
        model.eval()
        predictions = linker.link(mentions, top_k=min(5, num_beams))
    acc = accuracy_at_k(predictions, [m.gold_ids for m in mentions], ks=(1, 5), kb=kb)
    return {"acc1": float(acc["acc@1"]), "acc5": float(acc["acc@5"])}


class DevAccuracyCallback(TrainerCallback):
    """Adds ``eval_dev_acc1`` / ``eval_dev_acc5`` to every evaluation's metrics (see module doc).

    Use with ``metric_for_best_model="dev_acc1"``, ``greater_is_better=True`` and
    ``load_best_model_at_end=True`` to keep the checkpoint that links the dev set best.
    """

    def __init__(
        self, tokenizer: Any, kb: KnowledgeBase, trie: Optional[TokenTrie], mentions: Sequence[Mention], **decoding: int
    ) -> None:
        """``decoding``: the keyword settings of :func:`dev_accuracy` (num_beams, batch_size, context_window)."""
        self.tokenizer = tokenizer
        self.kb = kb
        self.trie = trie
        self.mentions = list(mentions)
        self.decoding = decoding
        self.history: list = []

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Score the last step when ``eval_steps`` does not divide it (module doc), so it competes for best."""
        if args.eval_strategy == "steps" and state.global_step >= state.max_steps and state.global_step % state.eval_steps:
            control.should_evaluate = True

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Optional[Dict[str, float]] = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if metrics is None or model is None:
            return
        started = time.perf_counter()
        acc = dev_accuracy(model, self.tokenizer, self.kb, self.trie, self.mentions, **self.decoding)
        extra = {"eval_dev_acc1": acc["acc1"], "eval_dev_acc5": acc["acc5"]}
        metrics.update(extra)  # the same dict the Trainer's best-checkpoint logic reads next
        if state.log_history and state.log_history[-1].get("step") == state.global_step and any(
            k.startswith("eval_") for k in state.log_history[-1]
        ):
            state.log_history[-1].update(extra)
        else:
            state.log_history.append({**extra, "step": state.global_step})
        self.history.append({"step": state.global_step, **extra})
        logger.info(
            "step %d: dev acc@1 %.4f acc@5 %.4f (%d mentions, %.1fs)",
            state.global_step,
            acc["acc1"],
            acc["acc5"],
            len(self.mentions),
            time.perf_counter() - started,
        )
