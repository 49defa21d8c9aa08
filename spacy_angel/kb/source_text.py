"""KB source files as text: strict UTF-8, gzip recognised by its magic bytes, errors naming file and line.

Apart from the readers (:mod:`spacy_angel.kb.readers`) because every format reads its file the same
way: line by line, streaming (MRCONSO is GBs), an invalid byte or a truncated ``.gz`` reported at
its line as a :class:`~spacy_angel.errors.KBFormatError`, never a U+FFFD inside a name.
"""
from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import IO, Iterator, Tuple

from spacy_angel.errors import Errors, KBFormatError
from spacy_angel.fileio import is_gzip
from spacy_angel.types import PathLike


def open_source_text(path: PathLike) -> IO[str]:
    """Open as strict UTF-8 text, gunzipping when the file starts with the gzip magic bytes."""
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def utf8_error(path: PathLike) -> KBFormatError:
    """The first invalid UTF-8 byte as ``file:line: ... byte offset N``. A text stream only knows its
    decode buffer, so the raw bytes are scanned again (lines end as in text mode: \\n, \\r\\n, \\r)."""
    p, offset, lineno = Path(path), 0, 1
    gz = is_gzip(p)
    with (gzip.open(p, "rb") if gz else open(p, "rb")) as fh:
        for raw in fh:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                lineno += raw[: e.start].count(b"\r") - raw[: e.start].count(b"\r\n")
                msg = Errors.E140 if gz else Errors.E111
                return KBFormatError(msg.format(byte=raw[e.start], offset=offset + e.start), p, lineno)
            offset += len(raw)
            lineno += 1 + raw.count(b"\r") - raw.count(b"\r\n")
    return KBFormatError(Errors.E141, p)


def read_error(path: PathLike, lineno: int, err: BaseException) -> KBFormatError:
    """A truncated or corrupt gzip stream (or an I/O error) at ``lineno``, as the project's own error."""
    msg = Errors.E142 if is_gzip(path) else Errors.E143
    return KBFormatError(msg.format(err_type=type(err).__name__, err=err), path, lineno)


def source_lines(path: PathLike) -> Iterator[Tuple[int, str]]:
    """Yield ``(1-based line number, line without its line ending)``, streaming."""
    lineno = 0
    with open_source_text(path) as fh:
        try:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line.rstrip("\r\n")
        except UnicodeDecodeError:
            raise utf8_error(path) from None
        except (OSError, EOFError, zlib.error) as err:  # a broken .gz: never a bare EOFError
            raise read_error(path, lineno + 1, err) from None


def strip_gz(name: str) -> str:
    return name[:-3] if name.lower().endswith(".gz") else name
