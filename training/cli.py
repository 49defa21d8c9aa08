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
import functools
import inspect
import json
import logging
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import typer

from spacy_angel.errors import Errors
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
    cli_fields,
)

app = typer.Typer(
    name="train",
    help="Train ANGEL models: positive-only training, negative mining, DPO, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def settings_options(required: Sequence[str] = (), **groups: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one typer option per field of each settings dataclass in ``groups``.

    The command declares its arguments as usual plus one parameter per group name; typer sees the
    generated options instead, and the command receives the built dataclasses. ``required``
    names fields that must be given on the command line (``--output``).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func)
        explicit = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(func).parameters.values()
            if p.name not in groups
        ]
        owners: Dict[str, str] = {}
        generated = []
        for group, cls in groups.items():
            for f, tp in cli_fields(cls):
                if f.name in owners or any(p.name == f.name for p in explicit):
                    raise TypeError(f"option {f.name!r} of {cls.__name__} is defined twice on {func.__name__}")
                owners[f.name] = group
                default = ... if f.name in required else f.default
                option = typer.Option(default, *f.metadata.get("flags", ()), help=f.metadata["help"])
                generated.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=tp))

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values: Dict[str, Dict[str, Any]] = {group: {} for group in groups}
            for name, group in owners.items():
                values[group][name] = kwargs.pop(name)
            built = {group: groups[group](**v) for group, v in values.items()}
            for settings in built.values():  # every stage, mining and evaluation included
                if getattr(settings, "threads", None) is not None:
                    _pin_threads(settings.threads)
            return func(**kwargs, **built)

        params = explicit + generated
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _pin_threads(threads: int) -> None:
    from training.runs.bookkeeping import pin_threads

    try:
        pin_threads(threads)
    except ValueError as err:
        _fail(f"--threads: {err}")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def _check_output_file(path: Path, option: str) -> None:
    """Refuse an output file path that is a directory before the work, not at the rename after it."""
    if path.is_dir():
        _fail(Errors.E117.format(path=path, option=option))


def _setup_logging(verbose: bool = True) -> None:
    from training.runs.distributed import is_main_process  # under accelerate launch, one process tells the story

    logging.basicConfig(
        level=logging.INFO if verbose and is_main_process() else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load_kb(path: Path):
    """A KB directory (``spacy-angel kb build``) or a KB source file in any supported format."""
    from spacy_angel.errors import KBFormatError
    from spacy_angel.kb.readers import load_kb

    if not path.exists():
        _fail(f"KB path {path} does not exist")
    try:
        return load_kb(path)
    except (KBFormatError, ValueError, OSError) as err:
        _fail(f"cannot read KB {path}: {err}")
    raise AssertionError  # unreachable


def _save_pairs(pairs: Any, output: Path, stats: Dict[str, Any], counts: Dict[str, Any], summary: str) -> None:
    """A pairs file and its ``.stats.json`` (with the corpus counts), both written atomically; then the summary."""
    from spacy_angel.fileio import atomic_write_json
    from training.examples.pair_files import write_pairs

    write_pairs(pairs, output)
    stats["corpus"] = counts
    atomic_write_json(output.with_name(output.name + ".stats.json"), stats, indent=1)
    typer.echo(summary)


def _load_mentions(path: Path, kb: Any, corpus: CorpusSettings, label: str = "corpus"):
    """Read + preprocess a corpus; prints the counts; returns (mentions, counts dict)."""
    from spacy_angel.errors import CorpusFormatError
    from training.data.corpora import read_corpus
    from training.data.preprocess import preprocess

    if not path.exists():
        _fail(f"{label} {path} does not exist")
    try:
        raw = read_corpus(path, format=corpus.corpus_format)
    except (CorpusFormatError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    mentions, pre = preprocess(raw, lowercase=corpus.lowercase, expand_abbreviations=corpus.abbreviations, kb=kb)
    dropped = ", ".join(f"{n} {why}" for why, n in sorted(pre.dropped.items())) or "none"
    typer.echo(
        f"{label} {path}: {raw.report.documents} documents, {len(raw)} mentions read "
        f"({raw.report.skipped_unnormalisable} unnormalisable skipped); kept {pre.kept}, dropped: {dropped}; "
        f"{pre.abbreviations_expanded} abbreviations expanded, {pre.ids_removed_not_in_kb} ids not in the KB removed"
    )
    if not mentions:
        _fail(f"no usable mentions in {label} {path}")
    return mentions, {"read": raw.report.to_dict(), "preprocess": pre.to_dict()}


def _dev(dev: Optional[Path], kb: Any, corpus: CorpusSettings):
    return _load_mentions(dev, kb, corpus, label="dev")[0] if dev is not None else None


# ---------------------------------------------------------------------------- positive
@app.command("positive")
@settings_options(required=("output_dir",), settings=PositiveSettings, corpus=CorpusSettings)
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
    _setup_logging()
    from spacy_angel.errors import TrainingDataError
    from training.stages.positive import train_positive

    kb = _load_kb(kb_path)
    mentions, _ = _load_mentions(train, kb, corpus, label="train")
    try:
        out = train_positive(model_dir, kb, mentions, settings=settings, dev_mentions=_dev(dev, kb, corpus))
    except (TrainingDataError, ValueError, OSError) as err:
        _fail(str(err))
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
def mine_command(
    model_dir: Path = typer.Argument(..., help="Positive-only model directory."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    train: Path = typer.Argument(..., help="Training corpus to mine negatives on."),
    output: Path = typer.Option(..., "--output", "-o", help="Pairs JSONL (one chosen/rejected pair per line); stats go to OUTPUT.stats.json."),
    settings: MiningSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Decode the training mentions and write (chosen, rejected) name pairs by the ANGEL rule."""
    _setup_logging()
    from training.stages.mining import STRATEGIES, mine_pairs

    if settings.strategy not in STRATEGIES:
        _fail(f"unknown strategy {settings.strategy!r}: choose one of {', '.join(STRATEGIES)}")
    _check_output_file(output, "--output")
    kb = _load_kb(kb_path)
    mentions, counts = _load_mentions(train, kb, corpus, label="train")
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
        _fail(str(err))
    _save_pairs(pairs, output, stats, counts, summary)


# ---------------------------------------------------------------------------- crossfit
@app.command("crossfit")
@settings_options(required=("output_dir",), settings=CrossfitSettings, corpus=CorpusSettings)
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
    _setup_logging()
    from spacy_angel.errors import TrainingDataError
    from training.stages.crossfit import crossfit_pairs

    _check_output_file(pairs, "--pairs")
    kb = _load_kb(kb_path)
    mentions, counts = _load_mentions(train, kb, corpus, label="train")
    try:
        found, stats = crossfit_pairs(model_dir, kb, mentions, settings, dev_mentions=_dev(dev, kb, corpus))
    except (TrainingDataError, ValueError, OSError) as err:
        _fail(str(err))
    if settings.only_fold is not None:
        typer.echo(f"fold {settings.only_fold} model ready in {stats['model']}; run again without --only-fold to mine every fold")
        return
    _save_pairs(found, pairs, stats, counts,
                f"{stats['pairs']} pairs from {stats['mentions_with_pairs']} of {len(mentions)} mentions in {settings.folds} folds "
                f"-> {pairs} (held-out acc@1 {stats['acc@1']:.4f}; by kind: {stats['pairs_by_kind']})")


# ---------------------------------------------------------------------------- dpo
@app.command("dpo")
@settings_options(required=("output_dir",), settings=PreferenceSettings, corpus=CorpusSettings)
def dpo_command(
    model_dir: Path = typer.Argument(..., help="Positive-only model directory (also the DPO reference unless --ref-model)."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    pairs_path: Path = typer.Argument(..., help="Pairs JSONL from 'train mine'."),
    dev: Optional[Path] = typer.Option(None, help="Dev corpus for checkpoint selection by Acc@1."),
    settings: PreferenceSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Negative-aware preference training (ANGEL stage 2) on mined pairs."""
    _setup_logging()
    from training.examples.pair_files import read_pairs

    kb = _load_kb(kb_path)
    if not pairs_path.exists():
        _fail(f"pairs file {pairs_path} does not exist")
    try:
        pairs = list(read_pairs(pairs_path))
    except ValueError as err:
        _fail(str(err))
    if not pairs:
        _fail(f"{pairs_path} holds no pairs")
    dev_mentions = _dev(dev, kb, corpus)
    from training.stages.preference import train_preference  # lazy: TRL is only needed here

    try:
        out = train_preference(model_dir, kb, pairs, settings=settings, dev_mentions=dev_mentions)
    except (ValueError, OSError) as err:
        _fail(str(err))
    typer.echo(f"{settings.loss} model written to {out} ({len(pairs)} pairs)")


# ---------------------------------------------------------------------------- iterate
@app.command("iterate")
@settings_options(required=("output_dir",), settings=IterateSettings, corpus=CorpusSettings)
def iterate_command(
    model_dir: Path = typer.Argument(..., help="Positive-only model directory."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    train: Path = typer.Argument(..., help="Training corpus."),
    dev: Optional[Path] = typer.Option(None, help="Dev corpus: keeps the best model, early-stops after --patience chunks."),
    settings: IterateSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """ANGEL's online loop: mine pairs on a chunk with the current model, DPO-train, repeat."""
    _setup_logging()
    from training.stages.iterate import iterative_rounds

    kb = _load_kb(kb_path)
    mentions, _ = _load_mentions(train, kb, corpus, label="train")
    dev_mentions = _dev(dev, kb, corpus)
    try:
        out = iterative_rounds(
            model_dir, kb, mentions, settings=dataclasses.replace(settings, progress=True), dev_mentions=dev_mentions
        )
    except (ValueError, OSError) as err:
        _fail(str(err))
    log = json.loads((out / "iterative_log.json").read_text(encoding="utf-8"))
    typer.echo(f"best model ({log['best']}, dev acc@1 {log['best_dev_acc1']}) written to {out}")


# ---------------------------------------------------------------------------- pretrain-data
@app.command("pretrain-data")
@settings_options(settings=PretrainDataSettings)
def pretrain_data_command(
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory; pretraining.jsonl is written there."),
    settings: PretrainDataSettings = None,
) -> None:
    """KB pre-training examples (synonym / definition templates -> closest other synonym) as JSONL."""
    _setup_logging()
    from training.examples.pretraining import write_pretraining_data

    if output.exists() and not output.is_dir():
        _fail(Errors.E114.format(path=output, option="--output"))
    kb = _load_kb(kb_path)
    path = output / "pretraining.jsonl"
    n = write_pretraining_data(kb, path, **dataclasses.asdict(settings))
    typer.echo(f"{n} pre-training examples written to {path}")


# ---------------------------------------------------------------------------- evaluate
def _acc_line(summary: Dict[str, Any], top_k: int) -> str:
    parts = [f"acc@{k} {summary[f'acc@{k}']:.4f}" for k in range(1, top_k + 1) if f"acc@{k}" in summary]
    ci = summary.get("acc@1_ci95")
    if ci:
        parts.append(f"acc@1 95% CI [{ci[0]:.4f}, {ci[1]:.4f}]")
    return f"n={summary['n']}: " + ", ".join(parts)


@app.command("evaluate")
@settings_options(settings=EvaluateSettings, corpus=CorpusSettings)
def evaluate_command(
    model_dir: str = typer.Argument(..., help="Model directory (or hub id), or 'tfidf' for the char 3-gram nearest-name baseline."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    test: Path = typer.Argument(..., help="Test corpus."),
    output: Path = typer.Option(..., "--output", "-o", help="JSON report: summary + every mention's candidates and correctness."),
    settings: EvaluateSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Link a test corpus and write a per-mention report with Acc@1..k."""
    _setup_logging(verbose=False)
    from spacy_angel.errors import LinkerError
    from spacy_angel.linking.linker import AngelLinker
    from spacy_angel.retrieval.tfidf import NameIndex
    from training.evaluation.metrics import evaluation_report, plot_bins, write_report

    s = settings
    if s.top_k < 1:  # else num_beams = max(.., top_k) could be 0 and the error would blame num_beams
        _fail(Errors.E115.format(option="--top-k", value=s.top_k))
    _check_output_file(output, "--output")
    kb = _load_kb(kb_path)
    mentions, counts = _load_mentions(test, kb, corpus, label="test")
    beams = max(s.num_beams or s.top_k, s.top_k)
    index = NameIndex(kb).fit() if (s.similarity or s.bins_plot is not None or model_dir == "tfidf") else None
    if model_dir == "tfidf":  # the baseline: nearest KB names by char 3-gram TF-IDF cosine
        predictions = index.link([m.surface for m in mentions], k=s.top_k)
    else:
        try:
            linker = AngelLinker.from_pretrained(
                model_dir, kb, device=s.device, num_beams=beams, batch_size=s.batch_size, context_window=s.context_window,
                mode=s.mode, num_candidates=s.num_candidates, name_index=index,
            )
        except (LinkerError, OSError) as err:
            _fail(str(err))
        predictions = linker.link(mentions, top_k=s.top_k, progress=True)
    report = evaluation_report(mentions, predictions, kb=kb, ks=tuple(range(1, s.top_k + 1)), name_index=index)
    report["meta"] = {
        "model": str(model_dir),
        "kb": str(kb_path),
        "test": str(test),
        "top_k": s.top_k,
        "num_beams": beams,
        "context_window": s.context_window,
        "mode": "tfidf" if model_dir == "tfidf" else s.mode,
        "num_candidates": s.num_candidates,
        "fusion": None if model_dir == "tfidf" or s.mode != "hybrid" else linker.fusion.to_dict(),
        "corpus": counts,
    }
    write_report(report, output)
    typer.echo(_acc_line(report["summary"], s.top_k))
    if s.bins_plot is not None:
        plot_bins({Path(str(model_dir)).name or "model": report}, Path(s.bins_plot))
        typer.echo(f"similarity-bin plot -> {s.bins_plot}")
    typer.echo(f"report -> {output}")


# ---------------------------------------------------------------------------- fuse
@app.command("fuse")
@settings_options(settings=FuseSettings, corpus=CorpusSettings)
def fuse_command(
    model_dir: Path = typer.Argument(..., help="Model directory: fusion.json is written into it."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file (the dev KB)."),
    dev: Path = typer.Argument(..., help="Labelled dev corpus the weights are fitted on."),
    settings: FuseSettings = None,
    corpus: CorpusSettings = None,
) -> None:
    """Fit the hybrid mode's fusion weights on dev and write MODEL/fusion.json (atomically)."""
    _setup_logging(verbose=False)
    from spacy_angel.errors import LinkerError
    from spacy_angel.linking.linker import AngelLinker
    from training.evaluation.metrics import write_report
    from training.stages.fuse import fit_linker_fusion

    s = settings
    kb = _load_kb(kb_path)
    mentions, _ = _load_mentions(dev, kb, corpus, label="dev")
    try:
        linker = AngelLinker.from_pretrained(
            model_dir, kb, device=s.device, num_beams=max(s.num_beams or s.top_k, s.top_k), batch_size=s.batch_size,
            context_window=s.context_window, mode="hybrid", num_candidates=s.num_candidates,
            index_dir=kb_path if kb_path.is_dir() else None,
        )
    except (LinkerError, OSError) as err:
        _fail(str(err))
    try:
        weights, report = fit_linker_fusion(linker, mentions, seed=s.seed)
    except ValueError as err:
        _fail(f"{dev}: {err}")
    path = weights.to_disk(model_dir)
    dev_fig = weights.dev
    typer.echo(
        f"dev n={int(dev_fig['n'])}: acc@1 tfidf {dev_fig['tfidf_acc@1']:.4f}, beam {dev_fig['beam_acc@1']:.4f}, "
        f"hybrid {dev_fig['hybrid_acc@1']:.4f} (5-fold CV {dev_fig['hybrid_cv_acc@1']:.4f}); "
        f"candidate recall {dev_fig['candidate_recall']:.4f}"
    )
    typer.echo("weights: " + ", ".join(f"{k} {getattr(weights, k):+.3f}" for k in ("model", "tfidf", "exact", "beam")))
    typer.echo(f"fusion weights -> {path}")
    if s.report:
        write_report(report, Path(s.report))


# ---------------------------------------------------------------------------- compare
@app.command("compare")
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
            _fail(f"report {p} does not exist")
    if output is not None:
        _check_output_file(output, "--output")
    try:
        result = compare_reports(report_a, report_b, n=n_bootstrap, seed=seed)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        _fail(str(err))
    if result.get("n", 0) == 0:
        _fail("the reports hold no mentions")
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
            _fail(str(err))
        typer.echo(f"similarity-bin plot -> {bins_plot}")


def main(argv: Optional[List[str]] = None) -> None:
    app(args=argv, prog_name="python -m training.cli")


if __name__ == "__main__":
    main()
