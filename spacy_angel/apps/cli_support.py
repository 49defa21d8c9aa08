"""How every command of ``spacy-angel`` (and of ``spacy-angel train``) fails and opens its inputs.

One copy for both command lines: a numbered message on stderr and exit code 1 instead of a
traceback; a KB path opened as a ``kb build`` directory or any KB file; a ``--fusion`` weights file
read, or refused with its numbered error; an output file refused before the work when it is a
directory; the output's lock held for the whole run (:mod:`spacy_angel.locks`).
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn, Optional, Union

import typer

from spacy_angel.errors import Errors, KBFormatError, OutputLockedError, OutputWriteError
from spacy_angel.fileio import check_output_file
from spacy_angel.kb.readers import load_kb
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.locks import output_lock

if TYPE_CHECKING:
    from spacy_angel.linking.fusion import FusionWeights


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def load_kb_or_fail(path: Path) -> KnowledgeBase:
    """A KB directory (from ``kb build``) or a KB file in any supported format."""
    try:
        return load_kb(path)
    except (KBFormatError, ValueError, OSError) as err:
        fail(str(err) if not Path(path).exists() else Errors.E389.format(path=path, err=err))


def load_fusion_or_fail(path: Optional[Path]) -> Optional["FusionWeights"]:
    """``--fusion FILE``: its weights (None when not given, so MODEL/fusion.json or the defaults apply)."""
    if path is None:
        return None
    from spacy_angel.errors import FusionError
    from spacy_angel.linking.fusion import FusionWeights

    try:
        return FusionWeights.from_file(path)
    except (FusionError, OSError) as err:
        fail(f"--fusion: {err}")


def check_output_file_or_fail(path: Path, option: str) -> None:
    """Refuse an output file path that is a directory before the work, not at the rename after it."""
    try:
        check_output_file(path, option)
    except IsADirectoryError as err:
        fail(str(err))


@contextlib.contextmanager
def writing(*outputs: Path) -> Iterator[None]:
    """Hold the lock of every output for the ``with`` body; a run already writing one is refused.

    Under ``accelerate launch`` / ``torchrun`` the processes of rank > 0 (``RANK``) are the same job as
    rank 0, which holds the locks and alone writes the outputs: they take none (else each rank refused
    the others, tests/training/runs/test_distributed.py)."""
    if _launched_rank() != 0:
        yield
        return
    with contextlib.ExitStack() as stack:
        for output in outputs:
            try:
                stack.enter_context(output_lock(output))
            except OutputLockedError as err:
                fail(str(err))
        yield


def _launched_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


Output = Union[str, Callable[[dict], Any]]


def writes(*outputs: Output) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a command holding the lock of each output it writes, named by its parameter (``"output"``),
    a field of a parameter (``"settings.output_dir"``) or a function of the keyword arguments. An
    output left unset (None) needs no lock. typer still sees the command's own signature."""

    def resolve(output: Output, kwargs: dict) -> Any:
        if callable(output):
            return output(kwargs)
        name, _, field = output.partition(".")
        value = kwargs.get(name)
        return getattr(value, field, None) if field else value

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            paths = [Path(p) for p in (resolve(o, kwargs) for o in outputs) if p is not None]
            with writing(*paths):
                try:
                    return func(**kwargs)
                except OutputWriteError as err:  # a full disk mid-run: the message, not a traceback
                    fail(str(err))

        return command

    return decorate
