"""``spacy-angel train``: positive-only training, negative mining, preference training, evaluation.

Found by ``spacy-angel`` through the ``spacy_angel_cli`` entry point group (``train =
training.cli:app`` in setup.cfg); also runs as ``python -m training.cli``. The options of each
command are generated from the settings dataclasses of :mod:`training.settings`
(:func:`settings_options`), so a default or help text exists once. Every command reads corpora
with :func:`training.data.corpora.read_corpus` and normalises them with
:func:`training.data.corpora.preprocess` (lowercasing, abbreviation expansion from the document,
dropping mentions whose ids are not in the KB), printing what was read and dropped. Heavy imports
(torch, transformers, TRL) happen inside the commands so ``--help`` stays fast.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List, Optional

import typer

from spacy_angel.apps.cli_support import check_output_file_or_fail, fail, load_fusion_or_fail, load_kb_or_fail, writes
from spacy_angel.errors import Errors
from training.cli_support import (
    acc_line,
    fusion_summary,
    load_dev,
    load_mentions,
    save_pairs,
    settings_options,
    setup_logging,
)
from training.cli_vocabulary import kb_linker_command, name_encoder_command
from training.settings import (
    CorpusSettings,
    CrossfitSettings,
    EvaluateSettings,
    FuseSettings,
    IterateSettings,
    MiningSettings,
    PositiveSettings,
    PreferenceSettings,
    PretrainDataSettings,
)

app = typer.Typer(
    name="train",
    help="Train ANGEL models: positive-only training, negative mining, DPO, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# ---------------------------------------------------------------------------- positive
@app.command("positive")
@settings_options(required=("output_dir",), settings=PositiveSettings, corpus=CorpusSettings)
@writes("settings.output_dir")
def positive_command(
    model_dir: Path = typer.Argument(..., help="Starting model directory (init-model output or a pre-trained model)."),
    kb_path: Path = typer.Argument(..., help="KB directory (kb build) or KB file."),
    train: Path = typer.Argument(..., help="Training corpus (PubTator file, BioSyn dir, AskAPatient fold, DocBin)."),
    dev: Optional[Path] = typer.Option(None, help="Dev corpus: evaluated with the constrained decoder; the best dev Acc@1 checkpoint is kept."),
    settings: PositiveSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Positive-only training (ANGEL stage 1): mention in context -> its gold names.

    Writes OUTPUT/ (model, tokenizer, training_log.json with loss curve, dev accuracy, wall time,
    peak memory). Interrupted runs resume from OUTPUT/checkpoints.
    """
    setup_logging()
    from spacy_angel.errors import TrainingDataError
    from training.stages.positive import train_positive

    kb = load_kb_or_fail(kb_path)
    mentions, _ = load_mentions(train, kb, corpus, label="train")
    try:
        out = train_positive(model_dir, kb, mentions, settings=settings, dev_mentions=load_dev(dev, kb, corpus))
    except (TrainingDataError, ValueError, OSError) as err:
        fail(str(err))
    log = json.loads((out / "training_log.json").read_text(encoding="utf-8"))
    last_loss = log["loss"][-1]["loss"] if log["loss"] else None
    typer.echo(
        f"model written to {out}: {log['global_step']} steps, final loss {last_loss}, "
        f"best dev acc@1 {log['best_metric']}, {log['wall_time_s']}s, peak RSS {log['peak_rss_mb']} MiB"
    )
    from training.runs.bookkeeping import plateau_warning

    if (warning := plateau_warning(log)) is not None:
        typer.echo(f"warning: {warning}", err=True)


# ---------------------------------------------------------------------------- mine
@app.command("mine")
@settings_options(settings=MiningSettings, corpus=CorpusSettings)
@writes("output")
def mine_command(
    model_dir: Path = typer.Argument(..., help="Positive-only model directory."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    train: Path = typer.Argument(..., help="Training corpus to mine negatives on."),
    output: Path = typer.Option(..., "--output", "-o", help="Pairs JSONL (one chosen/rejected pair per line); stats go to OUTPUT.stats.json."),
    settings: MiningSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Decode the training mentions and write (chosen, rejected) name pairs by the ANGEL rule."""
    setup_logging()
    from training.stages.mining import STRATEGIES, mine_pairs

    if settings.strategy not in STRATEGIES:
        fail(Errors.E303.format(strategy=settings.strategy, choices=", ".join(STRATEGIES)))
    check_output_file_or_fail(output, "--output")
    kb = load_kb_or_fail(kb_path)
    mentions, counts = load_mentions(train, kb, corpus, label="train")
    mining = dataclasses.replace(settings, progress=True)
    try:
        pairs, stats = mine_pairs(model_dir, kb, mentions, mining)
        summary = (
            f"{stats['pairs']} pairs from {stats['mentions_with_pairs']} of {len(mentions)} mentions -> {output} "
            f"(acc@1 on these mentions: {stats.get('acc@1', 'n/a')}; by kind: {stats['pairs_by_kind']})"
        )
        if settings.held_out_kb_names:
            from training.data.kb_subsets import read_held_out_names

            names, kb_without = read_held_out_names(model_dir, kb)
            more, held = mine_pairs(model_dir, kb_without, names, mining)
            summary += (
                f"; and {held['pairs']} pairs from {held['mentions_with_pairs']} of {held['mentions']} held-out KB names "
                f"(acc@1 {held.get('acc@1')}; by kind: {held['pairs_by_kind']}), {stats['pairs'] + held['pairs']} in all"
            )
            # "pairs" counts every row of the file; pairs_by_kind and acc@1 stay the mentions'
            stats.update(held_out_kb_names=held, pairs_from_mentions=stats["pairs"], pairs=stats["pairs"] + held["pairs"])
            pairs += more
    except (ValueError, OSError) as err:
        fail(str(err))
    save_pairs(pairs, output, stats, counts, summary)


# ---------------------------------------------------------------------------- crossfit
@app.command("crossfit")
@settings_options(required=("output_dir",), settings=CrossfitSettings, corpus=CorpusSettings)
@writes("pairs", "settings.output_dir")
def crossfit_command(
    model_dir: Path = typer.Argument(..., help="Starting model of the fold models (what the full positive model started from)."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    train: Path = typer.Argument(..., help="Training corpus: split into folds (by document or surface), each fold mined by the model trained without it."),
    pairs: Path = typer.Option(..., "--pairs", help="Pairs JSONL (each row with its fold); stats go to PAIRS.stats.json."),
    dev: Optional[Path] = typer.Option(None, help="Dev corpus: selects each fold model's checkpoint, as in 'train positive'."),
    settings: CrossfitSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Cross-fitted mining: K positive models, each trained without one fold, mine that fold."""
    setup_logging()
    from spacy_angel.errors import TrainingDataError
    from training.stages.crossfit import crossfit_pairs

    check_output_file_or_fail(pairs, "--pairs")
    kb = load_kb_or_fail(kb_path)
    mentions, counts = load_mentions(train, kb, corpus, label="train")
    try:
        found, stats = crossfit_pairs(model_dir, kb, mentions, settings, dev_mentions=load_dev(dev, kb, corpus))
    except (TrainingDataError, ValueError, OSError) as err:
        fail(str(err))
    if settings.only_fold is not None:
        typer.echo(f"fold {settings.only_fold} model ready in {stats['model']}; run again without --only-fold to mine every fold")
        return
    save_pairs(found, pairs, stats, counts,
                f"{stats['pairs']} pairs from {stats['mentions_with_pairs']} of {len(mentions)} mentions in {settings.folds} folds "
                f"-> {pairs} (held-out acc@1 {stats['acc@1']:.4f}; by kind: {stats['pairs_by_kind']})")


# ---------------------------------------------------------------------------- dpo
@app.command("dpo")
@settings_options(required=("output_dir",), settings=PreferenceSettings, corpus=CorpusSettings)
@writes("settings.output_dir")
def dpo_command(
    model_dir: Path = typer.Argument(..., help="Positive-only model directory (also the DPO reference unless --ref-model)."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    pairs_path: Path = typer.Argument(..., help="Pairs JSONL from 'train mine'."),
    dev: Optional[Path] = typer.Option(None, help="Dev corpus for checkpoint selection by Acc@1."),
    settings: PreferenceSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Negative-aware preference training (ANGEL stage 2) on mined pairs."""
    setup_logging()
    from training.examples.pair_files import read_pairs

    kb = load_kb_or_fail(kb_path)
    if not pairs_path.exists():
        fail(Errors.E388.format(what="pairs file", path=pairs_path))
    try:
        pairs = list(read_pairs(pairs_path))
    except ValueError as err:
        fail(str(err))
    if not pairs:
        fail(Errors.E391.format(path=pairs_path))
    dev_mentions = load_dev(dev, kb, corpus)
    from training.stages.preference import train_preference  # lazy: TRL is only needed here

    try:
        out = train_preference(model_dir, kb, pairs, settings=settings, dev_mentions=dev_mentions)
    except (ValueError, OSError) as err:
        fail(str(err))
    typer.echo(f"{settings.loss} model written to {out} ({len(pairs)} pairs)")


# ---------------------------------------------------------------------------- iterate
@app.command("iterate")
@settings_options(required=("output_dir",), settings=IterateSettings, corpus=CorpusSettings)
@writes("settings.output_dir")
def iterate_command(
    model_dir: Path = typer.Argument(..., help="Positive-only model directory."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    train: Path = typer.Argument(..., help="Training corpus."),
    dev: Optional[Path] = typer.Option(None, help="Dev corpus: keeps the best model, early-stops after --patience chunks."),
    settings: IterateSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """ANGEL's online loop: mine pairs on a chunk with the current model, DPO-train, repeat."""
    setup_logging()
    from training.stages.iterate import iterative_rounds

    kb = load_kb_or_fail(kb_path)
    mentions, _ = load_mentions(train, kb, corpus, label="train")
    dev_mentions = load_dev(dev, kb, corpus)
    try:
        out = iterative_rounds(
            model_dir, kb, mentions, settings=dataclasses.replace(settings, progress=True), dev_mentions=dev_mentions
        )
    except (ValueError, OSError) as err:
        fail(str(err))
    log = json.loads((out / "iterative_log.json").read_text(encoding="utf-8"))
    typer.echo(f"best model ({log['best']}, dev acc@1 {log['best_dev_acc1']}) written to {out}")


# ---------------------------------------------------------------------------- pretrain-data
@app.command("pretrain-data")
@settings_options(settings=PretrainDataSettings)
@writes("output")
def pretrain_data_command(
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory; pretraining.jsonl is written there."),
    settings: PretrainDataSettings = None,
) -> None:
    """KB pre-training examples (synonym / definition templates -> closest other synonym) as JSONL."""
    setup_logging()
    from training.examples.pretraining import write_pretraining_data

    if output.exists() and not output.is_dir():
        fail(Errors.E114.format(path=output, option="--output"))
    kb = load_kb_or_fail(kb_path)
    path = output / "pretraining.jsonl"
    n = write_pretraining_data(kb, path, **dataclasses.asdict(settings))
    typer.echo(f"{n} pre-training examples written to {path}")


# ---------------------------------------------------------------------------- evaluate
@app.command("evaluate")
@settings_options(settings=EvaluateSettings, corpus=CorpusSettings)
@writes("output")
def evaluate_command(
    model_dir: str = typer.Argument(..., help="Model directory (or hub id), or 'tfidf' for the char 3-gram nearest-name baseline."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    test: Path = typer.Argument(..., help="Test corpus."),
    output: Path = typer.Option(..., "--output", "-o", help="JSON report: summary + every mention's candidates and correctness."),
    fusion: Optional[Path] = typer.Option(None, "--fusion", help="Hybrid mode: fusion weights file (from 'train fuse --output'), used instead of MODEL/fusion.json."),
    settings: EvaluateSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Link a test corpus and write a per-mention report with Acc@1..k."""
    setup_logging(verbose=False)
    from spacy_angel.errors import LinkerError
    from spacy_angel.linking.linker import AngelLinker
    from spacy_angel.retrieval.tfidf import NameIndex
    from training.evaluation.metrics import evaluation_report, plot_bins, write_report

    s = settings
    if s.top_k < 1:  # else num_beams = max(.., top_k) could be 0 and the error would blame num_beams
        fail(Errors.E115.format(option="--top-k", value=s.top_k))
    check_output_file_or_fail(output, "--output")
    weights = load_fusion_or_fail(fusion)
    kb = load_kb_or_fail(kb_path)
    mentions, counts = load_mentions(test, kb, corpus, label="test")
    beams = max(s.num_beams or s.top_k, s.top_k)
    index = NameIndex(kb).fit() if (s.similarity or s.bins_plot is not None or model_dir == "tfidf") else None
    if model_dir == "tfidf":  # the baseline: nearest KB names by char 3-gram TF-IDF cosine
        predictions = index.link([m.surface for m in mentions], k=s.top_k)
    else:
        try:
            linker = AngelLinker.from_pretrained(
                model_dir, kb, device=s.device, num_beams=beams, batch_size=s.batch_size, context_window=s.context_window,
                mode=s.mode, num_candidates=s.num_candidates, name_index=index, fusion=weights,
            )
        except (LinkerError, OSError) as err:
            fail(str(err))
        predictions = linker.link(mentions, top_k=s.top_k, progress=True)
    report = evaluation_report(mentions, predictions, kb=kb, ks=tuple(range(1, s.top_k + 1)), name_index=index)
    report["meta"] = {
        "model": str(model_dir),
        "kb": str(kb_path),
        "test": str(test),
        "top_k": s.top_k,
        "num_beams": beams,
        "context_window": None if model_dir == "tfidf" else linker.context_window,
        "mode": "tfidf" if model_dir == "tfidf" else s.mode,
        "num_candidates": s.num_candidates,
        "fusion": None if model_dir == "tfidf" or s.mode != "hybrid" else linker.fusion.to_dict(),
        "fusion_file": None if fusion is None else str(fusion),
        "corpus": counts,
    }
    write_report(report, output)
    typer.echo(acc_line(report["summary"], s.top_k))
    if s.bins_plot is not None:
        plot_bins({Path(str(model_dir)).name or "model": report}, Path(s.bins_plot))
        typer.echo(f"similarity-bin plot -> {s.bins_plot}")
    typer.echo(f"report -> {output}")


# ---------------------------------------------------------------------------- fuse
@app.command("fuse")
@settings_options(settings=FuseSettings, corpus=CorpusSettings)
@writes(lambda kw: kw["output"] if kw["output"] is not None else Path(kw["model_dir"]) / "fusion.json")
def fuse_command(
    model_dir: Path = typer.Argument(..., help="Model directory (left untouched with --output)."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file (the dev KB)."),
    dev: Path = typer.Argument(..., help="Labelled dev corpus the weights are fitted on."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Weights file to write (read back with --fusion); default MODEL/fusion.json."),
    settings: FuseSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Fit the hybrid mode's fusion weights on dev and write them to --output (or MODEL/fusion.json), atomically."""
    setup_logging(verbose=False)
    from spacy_angel.errors import LinkerError
    from spacy_angel.linking.fusion import FusionWeights
    from spacy_angel.linking.linker import AngelLinker
    from training.evaluation.metrics import write_report
    from training.stages.fuse import fit_linker_fusion

    s = settings
    if output is not None:
        check_output_file_or_fail(output, "--output")
    kb = load_kb_or_fail(kb_path)
    mentions, _ = load_mentions(dev, kb, corpus, label="dev")
    try:
        linker = AngelLinker.from_pretrained(
            model_dir, kb, device=s.device, num_beams=max(s.num_beams or s.top_k, s.top_k), batch_size=s.batch_size,
            context_window=s.context_window, mode="hybrid", num_candidates=s.num_candidates,
            index_dir=kb_path if kb_path.is_dir() else None, fusion=FusionWeights(),  # the old weights play no part
        )
    except (LinkerError, OSError) as err:
        fail(str(err))
    try:
        weights, report = fit_linker_fusion(linker, mentions, seed=s.seed)
    except ValueError as err:
        fail(f"{dev}: {err}")
    path = weights.to_file(output) if output is not None else weights.to_disk(model_dir)
    typer.echo(fusion_summary(weights, path))
    if s.report:
        write_report(report, Path(s.report))


# ---------------------------------------------------------------------------- compare
@app.command("compare")
@writes("output")
def compare_command(
    report_a: Path = typer.Argument(..., help="Report JSON of system A (from 'train evaluate')."),
    report_b: Path = typer.Argument(..., help="Report JSON of system B, same test set."),
    n_bootstrap: int = typer.Option(10000, help="Bootstrap resamples."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    bins_plot: Optional[Path] = typer.Option(None, help="PNG comparing Acc@1 per similarity bin of A and B."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the comparison as JSON."),
) -> None:
    """Paired bootstrap + McNemar test of Acc@1 between two reports on the same mentions."""
    from training.evaluation.metrics import compare_reports, plot_bins, read_report, write_report

    for p in (report_a, report_b):
        if not p.exists():
            fail(Errors.E388.format(what="report", path=p))
    if output is not None:
        check_output_file_or_fail(output, "--output")
    try:
        result = compare_reports(report_a, report_b, n=n_bootstrap, seed=seed)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        fail(str(err))
    if result.get("n", 0) == 0:
        fail(Errors.E392)
    typer.echo(
        f"A {report_a}: acc@1 {result['acc_a']:.4f}\nB {report_b}: acc@1 {result['acc_b']:.4f}\n"
        f"difference A-B {result['diff']:+.4f} (95% CI [{result['diff_ci95'][0]:+.4f}, {result['diff_ci95'][1]:+.4f}]), "
        f"paired bootstrap p={result['p_value']:.4g}, McNemar p={result['mcnemar_p']:.4g} "
        f"(A only right: {result['a_only_correct']}, B only right: {result['b_only_correct']}, n={result['n']})"
    )
    if output is not None:
        write_report(result, output)
    if bins_plot is not None:
        try:
            plot_bins({f"A: {report_a.stem}": read_report(report_a), f"B: {report_b.stem}": read_report(report_b)}, bins_plot)
        except ValueError as err:
            fail(str(err))
        typer.echo(f"similarity-bin plot -> {bins_plot}")


# ---------------------------------------------------------------------------- your own vocabulary
app.command("kb-linker")(kb_linker_command)
app.command("name-encoder")(name_encoder_command)


def main(argv: Optional[List[str]] = None) -> None:
    app(args=argv, prog_name="python -m training.cli")


if __name__ == "__main__":
    main()
