"""Named numpy arrays in one safetensors file, opened with ``mmap`` instead of read into memory.

Why: a UMLS-sized index is hundreds of MB. Mapped, it opens in milliseconds, and every
``nlp.pipe(n_process=N)`` worker or Ray actor on the machine shares the same page-cache pages
instead of holding its own copy (measured with PSS in ``bench/kb_scale.py``).

Why safetensors' layout (8-byte header length, JSON header, raw little-endian data): it is a
documented format that the ``safetensors`` library and other tools read, it carries metadata, and it
cannot execute code on load (no pickle). We write it ourselves, streaming each array into the temp
file, because ``safetensors.numpy.save_file`` builds the whole file in memory first (twice the index
at peak); we map it ourselves because the library's numpy reader copies every tensor.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Mapping, Tuple, Union

import numpy as np

from spacy_angel.errors import Errors
from spacy_angel.fileio import PathLike, atomic_open

_DTYPES: Dict[str, str] = {"F64": "<f8", "F32": "<f4", "I64": "<i8", "I32": "<i4", "U8": "u1"}
_CODES: Dict[str, str] = {np.dtype(v).str: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 << 20


def index_dtype(*bounds: int) -> type:
    """The integer type for positions and ids up to ``bounds``: int32 (half the bytes) while every bound
    stays below 2**31 - 1, else int64."""
    return np.int32 if max(bounds, default=0) < 2**31 - 1 else np.int64


@dataclass(frozen=True)
class StreamedArray:
    """A 1-d array written piece by piece (``pieces()`` yields arrays of ``dtype`` whose lengths sum to
    ``length``), so an array that exists only while it is written never sits in memory whole."""

    length: int
    dtype: np.dtype
    pieces: Callable[[], Iterator[np.ndarray]]

    @property
    def shape(self) -> Tuple[int]:
        return (self.length,)

    @property
    def nbytes(self) -> int:
        return self.length * np.dtype(self.dtype).itemsize


def write_arrays(path: PathLike, arrays: Mapping[str, Union[np.ndarray, StreamedArray]],
                 metadata: Mapping[str, str]) -> None:
    """Write ``arrays`` (F64/F32/I64/I32/U8, C order; or :class:`StreamedArray`) and string ``metadata`` to
    ``path`` atomically."""
    header: Dict[str, object] = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    offset = 0
    ordered = sorted(arrays.items(), key=lambda kv: -np.dtype(kv[1].dtype).itemsize)  # keeps 8-byte data aligned
    for name, array in ordered:
        code = _CODES.get(np.dtype(array.dtype).newbyteorder("<").str)
        if code is None:
            raise TypeError(Errors.E440.format(name=name, dtype=array.dtype, dtypes=sorted(_DTYPES.values())))
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with atomic_open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for name, array in ordered:
            little = np.dtype(array.dtype).newbyteorder("<")
            if not isinstance(array, StreamedArray):
                handle.write(np.ascontiguousarray(array, dtype=little).data)
                continue
            written = 0
            for piece in array.pieces():
                handle.write(np.ascontiguousarray(piece, dtype=little).data)
                written += len(piece)
            if written != array.length:  # a producer bug: never leave a file whose header lies
                raise ValueError(Errors.E460.format(name=name, written=written, length=array.length))


def read_arrays(path: PathLike, mmap: bool = True) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """``(arrays, metadata)`` of a file :func:`write_arrays` wrote: read-only memory maps when ``mmap``,
    in-memory copies otherwise. ``ValueError`` for a truncated or foreign file (the caller names it)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(Errors.E441)
        (length,) = struct.unpack("<Q", head)
        if not 0 < length <= min(_MAX_HEADER, size - 8):
            raise ValueError(Errors.E442.format(reason="bad header length"))
        try:
            header = json.loads(fh.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise ValueError(Errors.E442.format(reason=err)) from err
    if not isinstance(header, dict):
        raise ValueError(Errors.E442.format(reason="header is not an object"))
    metadata = header.pop("__metadata__", {}) or {}
    start = 8 + length
    arrays: Dict[str, np.ndarray] = {}
    for name, spec in header.items():
        try:
            dtype = np.dtype(_DTYPES[spec["dtype"]])
            shape = tuple(int(n) for n in spec["shape"])
            begin, end = (int(n) for n in spec["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(Errors.E443.format(name=name, err=err)) from err
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize or begin < 0 or start + end > size:
            raise ValueError(Errors.E444.format(name=name))
        if count == 0:
            arrays[name] = np.zeros(shape, dtype=dtype)
        elif mmap:
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape)
        else:
            with open(path, "rb") as fh:
                fh.seek(start + begin)
                arrays[name] = np.frombuffer(fh.read(end - begin), dtype=dtype).reshape(shape).copy()
    return arrays, {str(k): str(v) for k, v in metadata.items()}
