"""Every training setting, once: one dataclass per stage, one field per setting, one help text.

Why one place: the same budgets and optimiser settings used to be typed in each stage function,
in the CLI and in the project scripts, and their defaults drifted apart. Here each field carries
its default and its ``metadata["help"]`` (the style of TRL's ``*Config`` classes); the stage
functions take these objects, the ``spacy-angel train`` options are generated from them
(:func:`training.cli.settings_options`) and argparse scripts use :func:`add_arguments`.

Training length is a number of steps (or epochs) with a fixed seed, so a run gives the same
weights on every machine; ``max_minutes`` is only a safety cap, and a run it cuts says so in its
log and on stdout (:mod:`training.runs.bookkeeping`).

Field metadata keys: ``help`` (the option's help), ``flags`` (CLI spellings when the default
``--field-name`` does not fit), ``cli`` (``False``: not a command-line option).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from spacy_angel.errors import Errors

S = TypeVar("S")


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with its help text (kept short so every field stays one line)."""
    return field(default=default, metadata={"help": help, **meta})


# ---------------------------------------------------------------------------- shared bases
@dataclass
class DecodingSettings:
    """How mentions are decoded with the constrained linker (dev evaluation, mining, evaluation)."""

    num_beams: int = _f(5, "Beam size of the constrained decoder (dev evaluation).")
    context_window: Optional[int] = _f(
        None, "Words of context on each side of a mention (default: the model's training window; 0 for a model that does not say)."
    )
    device: str = _f("auto", "auto (CUDA when present), cpu or cuda.")
    threads: Optional[int] = _f(
        None, "torch CPU threads (default: torch's choice, the machine's cores). Fix it for the same weights on other machines."
    )
    progress: bool = _f(False, "Show progress bars.", cli=False)


@dataclass
class TrainingSettings(DecodingSettings):
    """What every training stage shares: output, seed, optimiser, budgets, checkpoints."""

    output_dir: Optional[str] = _f(
        None, "Directory for the trained model, tokenizer and training_log.json.", flags=("--output", "-o")
    )
    seed: int = _f(0, "Random seed (data order, dropout): with fixed steps, the same weights on every run.")
    batch_size: int = _f(32, "Examples per optimiser step.")
    learning_rate: float = _f(3e-4, "Peak learning rate.")
    epochs: float = _f(1.0, "Training epochs (ignored when --max-steps is set).")
    max_steps: int = _f(-1, "Total optimiser steps (-1: use --epochs). Sets the training length.")
    max_minutes: Optional[float] = _f(
        None, "Wall-clock SAFETY cap, not a budget: a run it cuts says so and keeps a checkpoint to resume from."
    )
    eval_steps: Optional[int] = _f(None, "Evaluate (and checkpoint) every N steps (default: every epoch).")
    label_smoothing: float = _f(0.0, "Label smoothing factor.")
    resume: bool = _f(True, "Continue from the last checkpoint in OUTPUT/checkpoints (same data and settings).")
    keep_checkpoints: bool = _f(False, "Keep OUTPUT/checkpoints after a completed run.")


# ---------------------------------------------------------------------------- stages
@dataclass
class PositiveSettings(TrainingSettings):
    """Positive-only training (ANGEL stage 1): mention in context -> its gold names."""

    epochs: float = _f(3.0, "Training epochs (ignored when --max-steps is set).")
    label_smoothing: float = _f(0.1, "Label smoothing factor.")
    progress: bool = _f(True, "Show progress bars.", cli=False)
    synonyms_k: int = _f(3, "Targets per gold concept: its k names most TF-IDF-similar to the mention.")
    pretrain_data: Optional[str] = _f(None, "KB pre-training JSONL file or directory ('train pretrain-data') to mix in.")
    kb_names_as_mentions: bool = _f(False, "Also train on every KB name as a mention (useful from scratch).")
    hold_out_kb_names: float = _f(0.0, "Fraction of KB names (multi-name concepts) kept out of --kb-names-as-mentions, for 'train mine --held-out-kb-names'.")
    warmup_ratio: float = _f(0.05, "Fraction of steps for linear warmup.")
    warmup_steps: int = _f(0, "Warmup steps (overrides --warmup-ratio when > 0).")
    lr_scheduler: str = _f("linear", "linear, cosine, polynomial or constant_with_warmup.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    save_steps: Optional[int] = _f(None, "Checkpoint every N steps without a dev set (default: --eval-steps, else every epoch).")
    save_total_limit: int = _f(2, "Checkpoints kept on disk.")
    logging_steps: Optional[int] = _f(None, "Log the loss every N steps (default: about 50 points per run).")
    plateau_restarts: int = _f(1, "Restarts from the start model when the first dev evaluation links almost nothing (a loss plateau).")
    plateau_lr_factor: float = _f(0.5, "Learning-rate factor of each plateau restart.")
    plateau_min_dev_acc1: float = _f(0.01, "Dev Acc@1 at the first evaluation below which the run counts as stuck.")


@dataclass
class PretrainSettings(PositiveSettings):
    """KB pre-training (ANGEL Sec. 3.3): the positive stage on 'train pretrain-data' examples, no corpus."""

    epochs: float = _f(1.0, "Training epochs (ignored when --max-steps is set).")
    warmup_ratio: float = _f(0.02, "Fraction of steps for linear warmup.")


@dataclass
class PretrainDataSettings:
    """KB pre-training examples ('train pretrain-data'): synonym / definition templates -> closest other synonym."""

    max_examples: Optional[int] = _f(None, "Stop after this many examples.")
    num_negatives: int = _f(5, "TF-IDF negatives stored per example.")
    max_names_per_concept: Optional[int] = _f(None, "Cap the synonym anchors per concept.")
    seed: int = _f(0, "Random seed (concept order, context synonyms).")


@dataclass
class PreferenceSettings(TrainingSettings):
    """Negative-aware preference training (ANGEL stage 2): DPO and the paper's Table-D losses."""

    batch_size: int = _f(8, "Pairs per optimiser step.")
    learning_rate: float = _f(5e-5, "Peak learning rate.")
    resume: bool = _f(False, "Continue from the last checkpoint in OUTPUT/checkpoints (full checkpoints are then saved).")
    loss: str = _f("dpo", "dpo, pairwise (no reference), cpo or simpo.")
    beta: float = _f(0.1, "Preference temperature beta.")
    nll_alpha: Optional[float] = _f(
        None, "Weight of an NLL term on the chosen names (DPO: TRL's rpo_alpha, off by default; CPO: 1.0; SimPO: 0.0)."
    )
    simpo_gamma: float = _f(0.5, "SimPO's target reward margin.")
    ref_model_dir: Optional[str] = _f(None, "Reference model for DPO (default: the starting model).", flags=("--ref-model",))


@dataclass
class IterateSettings(PreferenceSettings):
    """ANGEL's online loop: mine pairs on a chunk with the current model, preference-train, repeat."""

    output_dir: Optional[str] = _f(None, "Directory for the best model and iterative_log.json.", flags=("--output", "-o"))
    ref_model_dir: Optional[str] = _f(None, "Unused: each chunk's reference is the current model.", cli=False)
    resume: bool = _f(False, "Unused: each chunk trains from scratch into a new directory.", cli=False)
    keep_checkpoints: bool = _f(False, "Unused: chunk directories are removed.", cli=False)
    rounds: int = _f(1, "Passes over the training chunks.")
    chunks: int = _f(10, "Chunks per pass: mine on a chunk, train, re-mine with the new model.")
    patience: int = _f(3, "Chunks without dev improvement before stopping.")
    top_k: int = _f(5, "Ranking depth for mining.")
    strategy: str = _f("angel", "angel, all, top10 or tfidf.")
    synonyms_k: int = _f(3, "Gold names used as 'chosen' when no right name is in the top-k.")
    mine_batch_size: int = _f(64, "Mentions per decoder batch while mining.")

    def mining(self) -> "MiningSettings":
        """The settings each chunk is mined with."""
        return MiningSettings(
            top_k=self.top_k, strategy=self.strategy, num_beams=self.num_beams, batch_size=self.mine_batch_size,
            synonyms_k=self.synonyms_k, context_window=self.context_window, device=self.device, progress=self.progress,
        )

    def preference(self, **changes: Any) -> PreferenceSettings:
        """The settings each chunk is trained with (the PreferenceSettings part, plus ``changes``)."""
        names = {f.name for f in dataclasses.fields(PreferenceSettings)}
        return PreferenceSettings(**{**{k: v for k, v in dataclasses.asdict(self).items() if k in names}, **changes})


@dataclass
class RankingSettings(DecodingSettings):
    """Top-k rankings of many mentions (mining, evaluation)."""

    top_k: int = _f(5, "Candidates per mention.")
    num_beams: Optional[int] = _f(None, "Beam size (default: top-k; at least top-k).")
    batch_size: int = _f(64, "Mentions per decoder batch.")


@dataclass
class MiningSettings(RankingSettings):
    """Negative mining: (chosen, rejected) name pairs from the model's own top-k."""

    top_k: int = _f(5, "Ranking depth the pairs come from.")
    strategy: str = _f("angel", "angel (misordered pairs), all (every right x wrong), top10, tfidf (no model).")
    synonyms_k: int = _f(3, "Gold names used as 'chosen' when no right name is in the top-k.")
    held_out_kb_names: bool = _f(False, "Also mine the KB names the model was trained without (MODEL/held_out_kb_names.json), decoded against the KB minus them.")


@dataclass
class CrossfitSettings(PositiveSettings):
    """Cross-fitted mining ('train crossfit'): K fold positive models, each mines the fold it never saw."""

    output_dir: Optional[str] = _f(None, "Directory for the fold models (fold-0, fold-1, ...).", flags=("--output", "-o"))
    folds: int = _f(2, "Folds K: the training mentions are split into K parts (see --fold-by).")
    fold_by: str = _f("document", "What a fold holds whole: document (PubTator, BioSyn) or surface (every mention of one normalised text; corpora without documents, e.g. AskAPatient).")
    fold_seed: int = _f(0, "Seed of the unit-to-fold assignment.")
    only_fold: Optional[int] = _f(None, "Train (or reuse) only this fold's model and stop, writing no pairs: one process per fold runs the folds in parallel; a run without it then mines every fold.")
    hold_out_names: bool = _f(True, "Fold models train on a KB without the names that only held-out mentions have (BioSyn KBs hold train surfaces); turn off where the KB names are not training surfaces (AskAPatient: it could leave a concept nameless).")
    top_k: int = _f(5, "Ranking depth the pairs come from.")
    strategy: str = _f("angel", "angel (misordered pairs), all (every right x wrong) or top10.")
    mine_batch_size: int = _f(64, "Mentions per decoder batch while mining.")

    def positive(self) -> PositiveSettings:
        """The settings each fold model is trained with (the PositiveSettings part)."""
        names = {f.name for f in dataclasses.fields(PositiveSettings)}
        return PositiveSettings(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def mining(self) -> "MiningSettings":
        """The settings each held-out fold is mined with."""
        return MiningSettings(
            top_k=self.top_k, strategy=self.strategy, num_beams=self.num_beams, batch_size=self.mine_batch_size,
            synonyms_k=self.synonyms_k, context_window=self.context_window, device=self.device, progress=self.progress,
        )


@dataclass
class NameEncoderSettings:
    """The dense name encoder (spacy_angel.retrieval.name_encoder): contrastive training on the KB's synonym sets.

    Defaults chosen on the dev split of HPO's held-out synonyms (docs/kb-linker.md): dev Acc@1 of the
    encoder alone rose to 0.77 by about 1,000 steps and was flat after.
    """

    steps: int = _f(1000, "Optimiser steps, each on batch_size concepts (two of each one's names).")
    batch_size: int = _f(512, "Concepts per step; the other concepts of the batch are the negatives.")
    dim: int = _f(256, "Width of the name vectors.")
    learning_rate: float = _f(3e-3, "Adam learning rate (constant).")
    temperature: float = _f(0.05, "Softmax temperature of the contrastive (InfoNCE) loss.")
    init_scale: float = _f(0.1, "Standard deviation of the random initial projection.")
    seed: int = _f(0, "Seed of the initial projection and the batches.")
    max_minutes: Optional[float] = _f(30.0, "Safety cap (reported when it cuts).")
    progress: bool = _f(True, "A progress bar on stderr.")


@dataclass
class HybridSettings(RankingSettings):
    """Hybrid linking: TF-IDF top names + the constrained beam, fused (spacy_angel.linking.hybrid)."""

    num_candidates: int = _f(20, "TF-IDF names per mention added to the beam's in hybrid and rerank modes.")


@dataclass
class FuseSettings(HybridSettings):
    """Fitting the hybrid mode's fusion weights on a labelled dev set (MODEL/fusion.json)."""

    seed: int = _f(0, "Seed of the cross-validation folds that choose the regularisation.")
    report: Optional[str] = _f(None, "Also write the fit report (weights, CV Acc@1 per C) as JSON here.")


@dataclass
class EvaluateSettings(HybridSettings):
    """Linking a test corpus for Acc@1..k reports."""

    mode: str = _f("hybrid", "beam, rerank or hybrid (with the model's fusion.json, or default weights).")
    similarity: bool = _f(True, "Add mention/gold TF-IDF similarity bins (paper Fig. 4).")
    bins_plot: Optional[str] = _f(None, "PNG of Acc@1 per similarity bin.")


@dataclass
class CorpusSettings:
    """How a corpus is read and normalised (:func:`training.data.corpora.preprocess`)."""

    corpus_format: str = _f("auto", "Corpus format: auto, pubtator, biosyn, askapatient or docbin.")
    lowercase: bool = _f(True, "Lowercase mentions and context.", flags=("--lowercase/--keep-case",))
    abbreviations: bool = _f(True, "Expand abbreviations defined in each document.")


# ---------------------------------------------------------------------------- helpers
def resolve(cls: Type[S], settings: Optional[S] = None, overrides: Optional[Mapping[str, Any]] = None) -> S:
    """``settings`` (or ``cls()``) with keyword ``overrides``: the keyword-argument compatibility path.

    Unknown names raise ``TypeError`` naming them, as a misspelt keyword argument would.
    """
    overrides = dict(overrides or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(Errors.E304.format(cls=cls.__name__, names=", ".join(unknown)))
    if settings is None:
        return cls(**overrides)
    if not isinstance(settings, cls):
        raise TypeError(Errors.E305.format(cls=cls.__name__, got=type(settings).__name__))
    return dataclasses.replace(settings, **overrides) if overrides else settings


def cli_fields(cls: type) -> Iterator[Tuple[dataclasses.Field, Any]]:
    """(field, resolved type) of every command-line field of a settings class, in field order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True):
            yield f, hints[f.name]


def _optional_inner(tp: Any) -> Tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def add_arguments(parser: argparse.ArgumentParser, cls: type, only: Optional[Sequence[str]] = None) -> None:
    """argparse options for ``cls``'s fields (``--max-steps``, ``--resume/--no-resume``), for scripts."""
    for f, tp in cli_fields(cls):
        if only is not None and f.name not in only:
            continue
        inner, _ = _optional_inner(tp)
        flag = "--" + f.name.replace("_", "-")
        if inner is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            parser.add_argument(flag, dest=f.name, type=inner, default=f.default, help=f.metadata["help"])


def from_namespace(cls: Type[S], namespace: argparse.Namespace, **changes: Any) -> S:
    """The settings object for parsed ``namespace`` values (fields it lacks keep their defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: Dict[str, Any] = {k: v for k, v in vars(namespace).items() if k in names}
    return cls(**{**values, **changes})
