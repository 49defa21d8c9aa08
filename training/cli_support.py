"""What every ``spacy-angel train`` command shares: options generated from the settings dataclasses,
thread pinning, logging, reading corpora and writing pairs with the counts printed, and the summary
lines of ``train evaluate`` and ``train fuse``.

Apart from the commands (:mod:`training.cli`) so that file holds one command per stage and nothing
else. Heavy imports stay inside the functions so ``--help`` stays fast.
"""
from __future__ import annotations

import functools
import inspect
import logging
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import typer

from spacy_angel.apps.cli_support import fail
from spacy_angel.errors import Errors
from training.settings import CorpusSettings, cli_fields


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
                    raise TypeError(Errors.E387.format(option=f.name, cls=cls.__name__, func=func.__name__))
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
                    pin_threads_or_fail(settings.threads)
            return func(**kwargs, **built)

        params = explicit + generated
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def pin_threads_or_fail(threads: int) -> None:
    from training.runs.bookkeeping import pin_threads

    try:
        pin_threads(threads)
    except ValueError as err:
        fail(f"--threads: {err}")


def setup_logging(verbose: bool = True) -> None:
    from training.runs.distributed import is_main_process  # under accelerate launch, one process tells the story

    logging.basicConfig(
        level=logging.INFO if verbose and is_main_process() else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def save_pairs(pairs: Any, output: Path, stats: Dict[str, Any], counts: Dict[str, Any], summary: str) -> None:
    """A pairs file and its ``.stats.json`` (with the corpus counts), both written atomically; then the summary."""
    from spacy_angel.fileio import atomic_write_json
    from training.examples.pair_files import write_pairs

    write_pairs(pairs, output)
    stats["corpus"] = counts
    atomic_write_json(output.with_name(output.name + ".stats.json"), stats, indent=1)
    typer.echo(summary)


def load_mentions(path: Path, kb: Any, corpus: CorpusSettings, label: str = "corpus"):
    """Read + preprocess a corpus; prints the counts; returns (mentions, counts dict)."""
    from spacy_angel.errors import CorpusFormatError
    from training.data.corpora import read_corpus
    from training.data.preprocess import preprocess

    if not path.exists():
        fail(Errors.E388.format(what=label, path=path))
    try:
        raw = read_corpus(path, format=corpus.corpus_format)
    except (CorpusFormatError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    mentions, pre = preprocess(raw, lowercase=corpus.lowercase, expand_abbreviations=corpus.abbreviations, kb=kb)
    dropped = ", ".join(f"{n} {why}" for why, n in sorted(pre.dropped.items())) or "none"
    typer.echo(
        f"{label} {path}: {raw.report.documents} documents, {len(raw)} mentions read "
        f"({raw.report.skipped_unnormalisable} unnormalisable skipped); kept {pre.kept}, dropped: {dropped}; "
        f"{pre.abbreviations_expanded} abbreviations expanded, {pre.ids_removed_not_in_kb} ids not in the KB removed"
    )
    if not mentions:
        fail(Errors.E390.format(label=label, path=path))
    return mentions, {"read": raw.report.to_dict(), "preprocess": pre.to_dict()}


def load_dev(dev: Optional[Path], kb: Any, corpus: CorpusSettings):
    return load_mentions(dev, kb, corpus, label="dev")[0] if dev is not None else None


def acc_line(summary: Dict[str, Any], top_k: int) -> str:
    """``train evaluate``'s summary line: Acc@1..k and the Acc@1 confidence interval."""
    parts = [f"acc@{k} {summary[f'acc@{k}']:.4f}" for k in range(1, top_k + 1) if f"acc@{k}" in summary]
    ci = summary.get("acc@1_ci95")
    if ci:
        parts.append(f"acc@1 95% CI [{ci[0]:.4f}, {ci[1]:.4f}]")
    return f"n={summary['n']}: " + ", ".join(parts)


def fusion_summary(weights: Any, path: Path) -> str:
    """``train fuse``'s report: the dev figures, the fitted weights and where they were written."""
    from spacy_angel.linking.fusion import FEATURES

    dev = weights.dev
    return (
        f"dev n={int(dev['n'])}: acc@1 tfidf {dev['tfidf_acc@1']:.4f}, beam {dev['beam_acc@1']:.4f}, "
        f"hybrid {dev['hybrid_acc@1']:.4f} (5-fold CV {dev['hybrid_cv_acc@1']:.4f}); "
        f"candidate recall {dev['candidate_recall']:.4f}\n"
        "weights: " + ", ".join(f"{k} {getattr(weights, k):+.3f}" for k in FEATURES) + "\n"
        f"fusion weights -> {path}"
    )
