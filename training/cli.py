"""``spacy-angel train``: positive-only training, negative mining, preference training, evaluation.

Mounted by ``spacy_angel/cli.py`` as the ``train`` group; also runs as ``python -m training.cli``.
Every command reads corpora with :func:`training.corpora.read_corpus` and normalises them with
:func:`training.corpora.preprocess` (lowercasing, abbreviation expansion from the document,
dropping mentions whose ids are not in the KB), printing what was read and dropped. Heavy
imports (torch, transformers, TRL) happen inside the commands so ``--help`` stays fast.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

app = typer.Typer(
    name="train",
    help="Train ANGEL models: positive-only training, negative mining, DPO, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_FORMAT_HELP = "Corpus format: auto, pubtator, biosyn, askapatient or docbin."


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def _setup_logging(verbose: bool = True) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load_kb(path: Path):
    """A KB directory (``spacy-angel kb build``) or a KB source file in any supported format."""
    from spacy_angel.kb import KBFormatError, KnowledgeBase

    if not path.exists():
        _fail(f"KB path {path} does not exist")
    try:
        return KnowledgeBase.from_disk(path) if path.is_dir() else KnowledgeBase.from_files([path])
    except (KBFormatError, ValueError, OSError) as err:
        _fail(f"cannot read KB {path}: {err}")
    raise AssertionError  # unreachable


def _load_mentions(
    path: Path, kb: Any, corpus_format: str, *, lowercase: bool = True, abbreviations: bool = True, label: str = "corpus"
):
    """Read + preprocess a corpus; prints the counts; returns (mentions, counts dict)."""
    from .corpora import CorpusFormatError, preprocess, read_corpus

    if not path.exists():
        _fail(f"{label} {path} does not exist")
    try:
        raw = read_corpus(path, format=corpus_format)
    except (CorpusFormatError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    mentions, pre = preprocess(raw, lowercase=lowercase, expand_abbreviations=abbreviations, kb=kb)
    dropped = ", ".join(f"{n} {why}" for why, n in sorted(pre.dropped.items())) or "none"
    typer.echo(
        f"{label} {path}: {raw.report.documents} documents, {len(raw)} mentions read "
        f"({raw.report.skipped_unnormalisable} unnormalisable skipped); kept {pre.kept}, dropped: {dropped}; "
        f"{pre.abbreviations_expanded} abbreviations expanded, {pre.ids_removed_not_in_kb} ids not in the KB removed"
    )
    if not mentions:
        _fail(f"no usable mentions in {label} {path}")
    return mentions, {"read": raw.report.to_dict(), "preprocess": pre.to_dict()}


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=1, ensure_ascii=False, default=str))


# ---------------------------------------------------------------------------- positive
@app.command("positive")
def positive_command(
    model_dir: Path = typer.Argument(..., help="Starting model directory (init-model output or a pre-trained model)."),
    kb_path: Path = typer.Argument(..., help="KB directory (kb build) or KB file."),
    train: Path = typer.Argument(..., help="Training corpus (PubTator file, BioSyn dir, AskAPatient fold, DocBin)."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained model, tokenizer and training_log.json."),
    dev: Optional[Path] = typer.Option(None, help="Dev corpus: evaluated with the constrained decoder; the best dev Acc@1 checkpoint is kept."),
    corpus_format: str = typer.Option("auto", help=_FORMAT_HELP),
    synonyms_k: int = typer.Option(3, help="Targets per gold concept: its k names most TF-IDF-similar to the mention."),
    pretrain_data: Optional[Path] = typer.Option(None, help="KB pre-training JSONL file or directory (from 'train pretrain-data') to mix in."),
    kb_names_as_mentions: bool = typer.Option(False, help="Also train on every KB name as a mention (useful from scratch)."),
    epochs: float = typer.Option(3.0, help="Training epochs (ignored when --max-steps is set)."),
    max_steps: int = typer.Option(-1, help="Total optimizer steps (-1: use --epochs)."),
    learning_rate: float = typer.Option(3e-4, help="Peak learning rate."),
    batch_size: int = typer.Option(32, help="Examples per step."),
    max_minutes: Optional[float] = typer.Option(None, help="Wall-time budget; stops, keeps a checkpoint to resume from."),
    label_smoothing: float = typer.Option(0.1, help="Label smoothing factor."),
    warmup_ratio: float = typer.Option(0.05, help="Fraction of steps for linear warmup."),
    lr_scheduler: str = typer.Option("linear", help="linear, cosine, polynomial or constant_with_warmup."),
    eval_steps: Optional[int] = typer.Option(None, help="Evaluate (and checkpoint) every N steps (default: every epoch)."),
    seed: int = typer.Option(0, help="Random seed."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the last checkpoint in OUTPUT/checkpoints."),
    num_beams: int = typer.Option(5, help="Beam size for dev evaluation."),
    context_window: int = typer.Option(32, help="Words of context on each side of a mention."),
    lowercase: bool = typer.Option(True, "--lowercase/--keep-case", help="Lowercase mentions and context."),
    abbreviations: bool = typer.Option(True, "--abbreviations/--no-abbreviations", help="Expand abbreviations defined in each document."),
) -> None:
    """Positive-only training (ANGEL stage 1): mention in context -> its gold names.

    Writes OUTPUT/ (model, tokenizer, training_log.json with loss curve, dev accuracy, wall time,
    peak memory). Interrupted runs resume from OUTPUT/checkpoints.
    """
    _setup_logging()
    from .positive import TrainingDataError, train_positive

    kb = _load_kb(kb_path)
    mentions, _ = _load_mentions(train, kb, corpus_format, lowercase=lowercase, abbreviations=abbreviations, label="train")
    dev_mentions = None
    if dev is not None:
        dev_mentions, _ = _load_mentions(dev, kb, corpus_format, lowercase=lowercase, abbreviations=abbreviations, label="dev")
    try:
        out = train_positive(
            model_dir, kb, mentions, output, dev_mentions=dev_mentions, synonyms_k=synonyms_k,
            pretrain_data=pretrain_data, kb_names_as_mentions=kb_names_as_mentions, epochs=epochs,
            learning_rate=learning_rate, batch_size=batch_size, max_steps=max_steps, max_minutes=max_minutes,
            label_smoothing=label_smoothing, warmup_ratio=warmup_ratio, eval_steps=eval_steps, seed=seed,
            resume=resume, num_beams=num_beams, context_window=context_window, lr_scheduler=lr_scheduler,
        )
    except (TrainingDataError, ValueError, OSError) as err:
        _fail(str(err))
    log = json.loads((out / "training_log.json").read_text(encoding="utf-8"))
    last_loss = log["loss"][-1]["loss"] if log["loss"] else None
    typer.echo(
        f"model written to {out}: {log['global_step']} steps, final loss {last_loss}, "
        f"best dev acc@1 {log['best_metric']}, {log['wall_time_s']}s, peak RSS {log['peak_rss_mb']} MiB"
    )


# ---------------------------------------------------------------------------- mine
@app.command("mine")
def mine_command(
    model_dir: Path = typer.Argument(..., help="Positive-only model directory."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    train: Path = typer.Argument(..., help="Training corpus to mine negatives on."),
    output: Path = typer.Option(..., "--output", "-o", help="Pairs JSONL (one chosen/rejected pair per line); stats go to OUTPUT.stats.json."),
    top_k: int = typer.Option(5, help="Ranking depth the pairs come from."),
    strategy: str = typer.Option("angel", help="angel (misordered pairs), all (every right x wrong), top10, tfidf (no model)."),
    num_beams: Optional[int] = typer.Option(None, help="Beam size (default: top-k; at least top-k)."),
    synonyms_k: int = typer.Option(3, help="Gold names used as 'chosen' when no right name is in the top-k."),
    batch_size: int = typer.Option(64, help="Mentions per decoder batch."),
    corpus_format: str = typer.Option("auto", help=_FORMAT_HELP),
    context_window: int = typer.Option(32, help="Words of context on each side of a mention."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    lowercase: bool = typer.Option(True, "--lowercase/--keep-case", help="Lowercase mentions and context."),
    abbreviations: bool = typer.Option(True, "--abbreviations/--no-abbreviations", help="Expand abbreviations defined in each document."),
) -> None:
    """Decode the training mentions and write (chosen, rejected) name pairs by the ANGEL rule."""
    _setup_logging()
    from .examples import write_pairs
    from .negatives import STRATEGIES, mine_pairs

    if strategy not in STRATEGIES:
        _fail(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    kb = _load_kb(kb_path)
    mentions, counts = _load_mentions(train, kb, corpus_format, lowercase=lowercase, abbreviations=abbreviations, label="train")
    try:
        pairs, stats = mine_pairs(
            model_dir, kb, mentions, top_k=top_k, strategy=strategy, num_beams=num_beams, batch_size=batch_size,
            synonyms_k=synonyms_k, context_window=context_window, device=device, progress=True,
        )
    except (ValueError, OSError) as err:
        _fail(str(err))
    write_pairs(pairs, output)
    stats["corpus"] = counts
    stats_path = output.with_name(output.name + ".stats.json")
    tmp = stats_path.with_name(f".{stats_path.name}.tmp")
    tmp.write_text(json.dumps(stats, indent=1), encoding="utf-8")
    tmp.replace(stats_path)
    typer.echo(
        f"{stats['pairs']} pairs from {stats['mentions_with_pairs']} of {len(mentions)} mentions -> {output} "
        f"(acc@1 on these mentions: {stats.get('acc@1', 'n/a')}; by kind: {stats['pairs_by_kind']})"
    )


# ---------------------------------------------------------------------------- dpo
@app.command("dpo")
def dpo_command(
    model_dir: Path = typer.Argument(..., help="Positive-only model directory (also the DPO reference unless --ref-model)."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    pairs_path: Path = typer.Argument(..., help="Pairs JSONL from 'train mine'."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained model, tokenizer and training_log.json."),
    dev: Optional[Path] = typer.Option(None, help="Dev corpus for checkpoint selection by Acc@1."),
    loss: str = typer.Option("dpo", help="dpo, pairwise (no reference), cpo or simpo."),
    beta: float = typer.Option(0.1, help="Preference temperature beta."),
    nll_alpha: Optional[float] = typer.Option(
        None, help="Weight of an NLL term on the chosen names (DPO: TRL's rpo_alpha, off by default; CPO: 1.0; SimPO: 0.0)."
    ),
    ref_model: Optional[Path] = typer.Option(None, help="Reference model for DPO (default: MODEL_DIR)."),
    epochs: float = typer.Option(1.0, help="Epochs over the pairs."),
    max_steps: int = typer.Option(-1, help="Total steps (-1: use --epochs)."),
    learning_rate: float = typer.Option(5e-5, help="Peak learning rate."),
    batch_size: int = typer.Option(8, help="Pairs per step."),
    max_minutes: Optional[float] = typer.Option(None, help="Wall-time budget."),
    seed: int = typer.Option(0, help="Random seed."),
    num_beams: int = typer.Option(5, help="Beam size for dev evaluation."),
    eval_steps: Optional[int] = typer.Option(None, help="Dev evaluation every N steps (default: once per epoch)."),
    corpus_format: str = typer.Option("auto", help=_FORMAT_HELP),
    lowercase: bool = typer.Option(True, "--lowercase/--keep-case", help="Lowercase dev mentions."),
    abbreviations: bool = typer.Option(True, "--abbreviations/--no-abbreviations", help="Expand abbreviations in dev mentions."),
) -> None:
    """Negative-aware preference training (ANGEL stage 2) on mined pairs."""
    _setup_logging()
    from .examples import read_pairs

    kb = _load_kb(kb_path)
    if not pairs_path.exists():
        _fail(f"pairs file {pairs_path} does not exist")
    try:
        pairs = list(read_pairs(pairs_path))
    except ValueError as err:
        _fail(str(err))
    if not pairs:
        _fail(f"{pairs_path} holds no pairs")
    dev_mentions = None
    if dev is not None:
        dev_mentions, _ = _load_mentions(dev, kb, corpus_format, lowercase=lowercase, abbreviations=abbreviations, label="dev")
    from .preference import train_preference  # lazy: TRL is only needed here

    try:
        out = train_preference(
            model_dir, kb, pairs, output, loss=loss, beta=beta, ref_model_dir=ref_model, dev_mentions=dev_mentions,
            epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, max_steps=max_steps,
            max_minutes=max_minutes, seed=seed, num_beams=num_beams, eval_steps=eval_steps, nll_alpha=nll_alpha,
        )
    except (ValueError, OSError) as err:
        _fail(str(err))
    typer.echo(f"{loss} model written to {out} ({len(pairs)} pairs)")


# ---------------------------------------------------------------------------- iterate
@app.command("iterate")
def iterate_command(
    model_dir: Path = typer.Argument(..., help="Positive-only model directory."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    train: Path = typer.Argument(..., help="Training corpus."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the best model and iterative_log.json."),
    dev: Optional[Path] = typer.Option(None, help="Dev corpus: keeps the best model, early-stops after --patience chunks."),
    rounds: int = typer.Option(1, help="Passes over the training chunks."),
    chunks: int = typer.Option(10, help="Chunks per pass: mine on a chunk, train, re-mine with the new model."),
    top_k: int = typer.Option(5, help="Ranking depth for mining."),
    strategy: str = typer.Option("angel", help="angel, all, top10 or tfidf."),
    patience: int = typer.Option(3, help="Chunks without dev improvement before stopping."),
    loss: str = typer.Option("dpo", help="dpo, pairwise, cpo or simpo."),
    beta: float = typer.Option(0.1, help="Preference temperature beta."),
    learning_rate: float = typer.Option(5e-5, help="Peak learning rate."),
    batch_size: int = typer.Option(8, help="Pairs per step."),
    epochs: float = typer.Option(1.0, help="Epochs over each chunk's pairs."),
    seed: int = typer.Option(0, help="Random seed (chunk split, training)."),
    num_beams: int = typer.Option(5, help="Beam size."),
    corpus_format: str = typer.Option("auto", help=_FORMAT_HELP),
) -> None:
    """ANGEL's online loop: mine pairs on a chunk with the current model, DPO-train, repeat."""
    _setup_logging()
    from .negatives import iterative_rounds

    kb = _load_kb(kb_path)
    mentions, _ = _load_mentions(train, kb, corpus_format, label="train")
    dev_mentions = _load_mentions(dev, kb, corpus_format, label="dev")[0] if dev is not None else None
    try:
        out = iterative_rounds(
            model_dir, kb, mentions, output, rounds=rounds, chunks=chunks, top_k=top_k, strategy=strategy,
            dev_mentions=dev_mentions, patience=patience, loss=loss, beta=beta, learning_rate=learning_rate,
            batch_size=batch_size, epochs=epochs, seed=seed, num_beams=num_beams, progress=True,
        )
    except (ValueError, OSError) as err:
        _fail(str(err))
    log = json.loads((out / "iterative_log.json").read_text(encoding="utf-8"))
    typer.echo(f"best model ({log['best']}, dev acc@1 {log['best_dev_acc1']}) written to {out}")


# ---------------------------------------------------------------------------- pretrain-data
@app.command("pretrain-data")
def pretrain_data_command(
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory; pretraining.jsonl is written there."),
    max_examples: Optional[int] = typer.Option(None, help="Stop after this many examples."),
    num_negatives: int = typer.Option(5, help="TF-IDF negatives stored per example."),
    max_names_per_concept: Optional[int] = typer.Option(None, help="Cap the synonym anchors per concept."),
    seed: int = typer.Option(0, help="Random seed (concept order, context synonyms)."),
) -> None:
    """KB pre-training examples (synonym / definition templates -> closest other synonym) as JSONL."""
    _setup_logging()
    from .pretraining import write_pretraining_data

    kb = _load_kb(kb_path)
    path = output / "pretraining.jsonl"
    n = write_pretraining_data(
        kb, path, max_examples=max_examples, seed=seed, num_negatives=num_negatives,
        max_names_per_concept=max_names_per_concept,
    )
    typer.echo(f"{n} pre-training examples written to {path}")


# ---------------------------------------------------------------------------- evaluate
def _acc_line(summary: Dict[str, Any], top_k: int) -> str:
    parts = [f"acc@{k} {summary[f'acc@{k}']:.4f}" for k in range(1, top_k + 1) if f"acc@{k}" in summary]
    ci = summary.get("acc@1_ci95")
    if ci:
        parts.append(f"acc@1 95% CI [{ci[0]:.4f}, {ci[1]:.4f}]")
    return f"n={summary['n']}: " + ", ".join(parts)


@app.command("evaluate")
def evaluate_command(
    model_dir: str = typer.Argument(..., help="Model directory (or hub id), or 'tfidf' for the char 3-gram nearest-name baseline."),
    kb_path: Path = typer.Argument(..., help="KB directory or KB file."),
    test: Path = typer.Argument(..., help="Test corpus."),
    output: Path = typer.Option(..., "--output", "-o", help="JSON report: summary + every mention's candidates and correctness."),
    top_k: int = typer.Option(5, help="Candidates per mention (Acc@1..k)."),
    num_beams: Optional[int] = typer.Option(None, help="Beam size (default: top-k; at least top-k)."),
    batch_size: int = typer.Option(64, help="Mentions per decoder batch."),
    corpus_format: str = typer.Option("auto", help=_FORMAT_HELP),
    context_window: int = typer.Option(32, help="Words of context on each side of a mention."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    similarity: bool = typer.Option(True, "--similarity/--no-similarity", help="Add mention/gold TF-IDF similarity bins (paper Fig. 4)."),
    bins_plot: Optional[Path] = typer.Option(None, help="PNG of Acc@1 per similarity bin."),
    lowercase: bool = typer.Option(True, "--lowercase/--keep-case", help="Lowercase mentions and context."),
    abbreviations: bool = typer.Option(True, "--abbreviations/--no-abbreviations", help="Expand abbreviations defined in each document."),
) -> None:
    """Link a test corpus and write a per-mention report with Acc@1..k."""
    _setup_logging(verbose=False)
    from spacy_angel.errors import LinkerError
    from spacy_angel.linker import AngelLinker

    from .evaluate import evaluation_report, plot_bins, write_report

    kb = _load_kb(kb_path)
    mentions, counts = _load_mentions(test, kb, corpus_format, lowercase=lowercase, abbreviations=abbreviations, label="test")
    beams = max(num_beams or top_k, top_k)
    from .tfidf import NameIndex

    index = NameIndex(kb).fit() if (similarity or bins_plot is not None or model_dir == "tfidf") else None
    if model_dir == "tfidf":  # the baseline: nearest KB names by char 3-gram TF-IDF cosine
        predictions = index.link([m.surface for m in mentions], k=top_k)
    else:
        try:
            linker = AngelLinker.from_pretrained(
                model_dir, kb, device=device, num_beams=beams, batch_size=batch_size, context_window=context_window
            )
        except (LinkerError, OSError) as err:
            _fail(str(err))
        predictions = linker.link(mentions, top_k=top_k, progress=True)
    report = evaluation_report(mentions, predictions, kb=kb, ks=tuple(range(1, top_k + 1)), name_index=index)
    report["meta"] = {
        "model": str(model_dir),
        "kb": str(kb_path),
        "test": str(test),
        "top_k": top_k,
        "num_beams": beams,
        "context_window": context_window,
        "corpus": counts,
    }
    write_report(report, output)
    typer.echo(_acc_line(report["summary"], top_k))
    if bins_plot is not None:
        plot_bins({Path(str(model_dir)).name or "model": report}, bins_plot)
        typer.echo(f"similarity-bin plot -> {bins_plot}")
    typer.echo(f"report -> {output}")


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
    from .evaluate import compare_reports, plot_bins, read_report, write_report

    for p in (report_a, report_b):
        if not p.exists():
            _fail(f"report {p} does not exist")
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
