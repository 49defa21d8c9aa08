"""``spacy-angel train kb-linker`` and ``train name-encoder``: the commands for a user's own vocabulary
(registered on the ``train`` app by :mod:`training.cli`; apart so that each file stays readable)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from spacy_angel.apps.cli_support import fail, load_kb_or_fail, writes
from spacy_angel.errors import Errors
from training.cli_support import load_mentions, settings_options, setup_logging
from training.runs.bookkeeping import quiet_libraries
from training.settings import CorpusSettings, NameEncoderSettings


# ---------------------------------------------------------------------------- kb-linker
@writes("output")
def kb_linker_command(
    kb_path: Path = typer.Argument(..., help="KB directory (kb build) or KB file in any format kb build reads."),
    output: Path = typer.Argument(..., help="Pipeline directory to write (spacy.load opens it); the build is kept in OUTPUT/build."),
    kb_format: str = typer.Option("auto", "--format", "-f", help="Format of a KB file (auto: detected)."),
    scale: float = typer.Option(1.0, "--scale", help="Training length relative to the sizing rule (docs/kb-linker.md)."),
    positive_steps: Optional[int] = typer.Option(None, "--positive-steps", help="Positive steps (default: the sizing rule)."),
    dpo_steps: Optional[int] = typer.Option(None, "--dpo-steps", help="DPO steps (default: the sizing rule)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the weights and the data order."),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads of every stage (fixed: the same model on any machine)."),
    ruler: bool = typer.Option(True, "--ruler/--no-ruler", help="Also add an entity_ruler matching the KB's names."),
    label: str = typer.Option("ENTITY", "--label", help="Entity label of the ruler's spans."),
    synonym_targets: int = typer.Option(0, "--synonym-targets", help="Also train name -> up to N other names of its concept (0: off)."),
    name_encoder: bool = typer.Option(True, "--name-encoder/--no-name-encoder", help="Train the dense name encoder on the KB's synonym sets and fuse its cosine."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="Annotated mentions to train on besides the KB's names (the model and the encoder)."),
    dev: Optional[Path] = typer.Option(None, "--dev", help="Annotated dev mentions to choose DPO and fit the fusion on (default: held-out synonyms)."),
    corpus_format: str = typer.Option("auto", "--corpus-format", help="Format of --corpus and --dev: auto, pubtator, biosyn, askapatient or docbin."),
    encoder_steps: int = typer.Option(NameEncoderSettings.steps, "--encoder-steps", help="Name encoder steps (512 concepts each)."),
) -> None:
    """A linker for your own vocabulary from its names alone: held-out synonyms, a model trained on the
    KB, DPO kept only when dev improves, a dense name encoder trained on the KB's synonym sets, fusion fitted on dev; OUTPUT is a spaCy pipeline with a model card.

    Resumable: run the same command again after an interruption and it continues at the stage it was in.
    """
    from training.data.corpora import read_corpus
    from training.stages.kb_linker import load_source_kb, plan, prepare_output, run_kb_linker, say
    from training.stages.kb_linker_corpus import UserCorpus
    from training.stages.kb_linker_recipe import Recipe

    quiet_libraries()
    try:
        prepare_output(output)
        kb = load_source_kb([kb_path], kb_format)
        recipe = Recipe.for_kb(
            kb, scale=scale, positive_steps=positive_steps, dpo_steps=dpo_steps, seed=seed, threads=threads,
            synonym_targets=synonym_targets, name_encoder=name_encoder, encoder_steps=encoder_steps,
        )
        user = UserCorpus(corpus, dev, corpus_format)
        for option, path in (("--corpus", corpus), ("--dev", dev)):
            if path is not None and not path.exists():
                raise FileNotFoundError(Errors.E388.format(what=option, path=path))
            if path is not None:  # a malformed file is refused now, naming its line, not after an hour of training
                read_corpus(path, format=corpus_format)
    except (OSError, ValueError) as err:
        fail(str(err))
    say(plan(kb_path, kb, recipe))
    command = "spacy-angel " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    card = run_kb_linker(kb_path, output, recipe, command, kb_format=kb_format, ruler=ruler, entity_label=label, source_kb=kb,
                         corpus=user)
    typer.echo(card)


# ---------------------------------------------------------------------------- name-encoder
@settings_options(settings=NameEncoderSettings, corpus=CorpusSettings)
@writes(lambda kw: Path(kw["model_dir"]) / "name_encoder" if Path(kw["model_dir"]).is_dir() else None)  # no folder: refused below
def name_encoder_command(
    model_dir: Path = typer.Argument(..., help="Model directory the encoder is saved in (MODEL/name_encoder)."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file whose synonym sets it learns from."),
    train: Optional[Path] = typer.Option(None, "--train", help="Annotated mentions whose surfaces join their concepts' synonym sets."),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads (fixed: the same encoder on any machine)."),
    settings: NameEncoderSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Train the dense name encoder on the KB's synonym sets (and a corpus' mentions) into MODEL/name_encoder.

    Hybrid linking with this model then adds the encoder's nearest names and its cosine feature; refit the
    fusion weights on dev afterwards (``train fuse``), since the old ones give the new feature no weight.
    """
    setup_logging(verbose=False)
    import torch

    from spacy_angel.fileio import atomic_directory
    from spacy_angel.retrieval.name_encoder import ENCODER_DIR
    from training.stages.name_encoder import train_name_encoder

    if not model_dir.is_dir():
        fail(Errors.E388.format(what="model directory", path=model_dir))
    kb = load_kb_or_fail(kb_path)
    mentions = load_mentions(train, kb, corpus, label="train")[0] if train is not None else []
    torch.set_num_threads(threads)
    try:
        encoder, log = train_name_encoder(kb, settings, [(m.surface, m.gold_ids) for m in mentions])
    except ValueError as err:
        fail(f"{kb_path}: {err}")
    with atomic_directory(model_dir / ENCODER_DIR) as tmp:
        encoder.to_disk(tmp)
    typer.echo(f"name encoder ({log['synonym_sets']} synonym sets, {log['steps_done']} steps, final loss "
               f"{log['final_loss']}) -> {model_dir / ENCODER_DIR}")
    if log["safety_cap"]:
        typer.echo(f"WARNING: {log['safety_cap']}")
