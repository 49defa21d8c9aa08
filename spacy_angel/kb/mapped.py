"""The KB's tables as flat arrays in ``kb.safetensors``, memory-mapped: UMLS-sized KBs without Python objects.

Why: a loaded :class:`~spacy_angel.kb.store.KnowledgeBase` held every name and id as a Python ``str``
plus a ``dict`` entry, about 400 bytes per name: 2.4 GB at UMLS's 6M names, copied into every
``nlp.pipe(n_process=N)`` worker and Ray actor. Here the same tables are UTF-8 blobs with offsets,
sorted orders for lookups (binary search, ``bisect`` in C over a sequence view) and small per-concept
arrays; mapped, they open at once and their pages are shared between processes.

The views below answer exactly the calls the KB makes on its in-memory tables (``names[i]``,
``_name_to_idx.get(name)``, ``_aliases.get(c, ())`` ...), so the KB's lookups run unchanged on either.
"""
from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from spacy_angel.errors import Errors, KBFormatError
from spacy_angel.mapped_arrays import read_arrays

#: separator inside a blob: names and ids never hold a newline (names.txt is newline-separated)
_SEP = b"\n"
#: separator of a concept's semantic types inside one string
_TYPE_SEP = "\x1f"


def encode_strings(strings: Sequence[Optional[str]]) -> Tuple[np.ndarray, np.ndarray]:
    """``(blob, offsets)``: string ``i`` is ``blob[offsets[i]:offsets[i + 1] - 1]`` (each ends in a newline;
    ``None`` is stored as empty)."""
    parts = [(s or "").encode("utf-8") + _SEP for s in strings]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return np.frombuffer(b"".join(parts), dtype=np.uint8), offsets


def sorted_order(strings: Sequence[str]) -> np.ndarray:
    """Indices of ``strings`` in code-point order (= UTF-8 byte order), for binary search."""
    return np.asarray(sorted(range(len(strings)), key=strings.__getitem__), dtype=np.int32)


class MappedStrings(Sequence[str]):
    """A read-only sequence of strings over ``(blob, offsets)`` arrays (mapped or not)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self.blob[int(self.offsets[i]) : int(self.offsets[i + 1]) - 1].tobytes().decode("utf-8")

    #: strings decoded per call when iterating: 6M names in seconds, not minutes
    DECODE_STEP = 1 << 16

    def __iter__(self) -> Iterator[str]:
        return self.iter_range(0, len(self))

    def iter_range(self, lo: int, hi: int) -> Iterator[str]:
        """Strings ``[lo, hi)`` (clipped to the sequence), decoded many per call, none before ``lo``: a
        forked TF-IDF fit's workers each read their own range of names."""
        lo, hi = max(0, lo), min(len(self), hi)
        for start in range(lo, hi, self.DECODE_STEP):
            stop = min(hi, start + self.DECODE_STEP)
            chunk = self.blob[int(self.offsets[start]) : int(self.offsets[stop])].tobytes().decode("utf-8")
            yield from chunk.split("\n")[: stop - start]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]


class _SortedView(Sequence[str]):
    def __init__(self, keys: MappedStrings, order: np.ndarray) -> None:
        self.keys, self.order = keys, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: Any) -> Any:
        return self.keys[int(self.order[i])]


class SortedLookup:
    """``get(key)`` -> ``values[i]`` for the ``i`` with ``keys[i] == key``: the dict ``name -> index`` /
    ``id -> concept`` of an in-memory KB, as a binary search over ``order`` (keys in sorted order)."""

    def __init__(self, keys: MappedStrings, order: np.ndarray, values: Optional[np.ndarray] = None) -> None:
        self._view = _SortedView(keys, order)
        self.keys, self.order, self.values = keys, order, values

    def _find(self, key: str) -> Optional[int]:
        pos = bisect.bisect_left(self._view, key)
        if pos < len(self.order) and self._view[pos] == key:
            i = int(self.order[pos])
            return i if self.values is None else int(self.values[i])
        return None

    def get(self, key: str, default: Any = None) -> Any:
        found = self._find(key) if isinstance(key, str) else None
        return default if found is None else found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) is not None

    def __len__(self) -> int:
        return len(self.order)


class OptionalStrings:
    """``get(c)`` -> the string of concept ``c`` or ``default`` where none was stored (definitions)."""

    def __init__(self, strings: MappedStrings, present: np.ndarray) -> None:
        self.strings, self.present = strings, present

    def get(self, c: int, default: Any = None) -> Any:
        return self.strings[c] if 0 <= c < len(self.present) and self.present[c] else default

    def __getitem__(self, c: int) -> Optional[str]:
        return self.get(c)


class SplitStrings:
    """``get(c, ())`` -> a tuple split from concept ``c``'s string (semantic types, alias ids)."""

    def __init__(self, strings: MappedStrings, sep: str) -> None:
        self.strings, self.sep = strings, sep

    def get(self, c: int, default: Any = ()) -> Any:
        value = self.strings[c] if 0 <= c < len(self.strings) else ""
        return tuple(value.split(self.sep)) if value else default


class Flags:
    """``c in flags``: a set of concept indices as a boolean array."""

    def __init__(self, flags: np.ndarray) -> None:
        self.flags = flags

    def __contains__(self, c: object) -> bool:
        return isinstance(c, (int, np.integer)) and 0 <= int(c) < len(self.flags) and bool(self.flags[int(c)])


def table_arrays(names: Sequence[str], concept_ids: Sequence[str], aliases: Dict[int, List[str]],
                 preferred: Sequence[Optional[str]], definitions: Dict[int, str], types: Dict[int, Tuple[str, ...]],
                 pref_explicit: Any) -> Dict[str, np.ndarray]:
    """Every table of a KB as arrays for ``kb.safetensors`` (the CSR name/concept arrays are added by the KB)."""
    n_con = len(concept_ids)
    alias_lists = [tuple(aliases.get(c, ())) for c in range(n_con)]  # dicts, or the views of a mapped KB
    preferred_list = [preferred[c] for c in range(n_con)]
    definition_list = [definitions.get(c) for c in range(n_con)]
    all_ids = list(concept_ids)
    id_concept = list(range(n_con))
    for c, ids in enumerate(alias_lists):
        all_ids.extend(ids)
        id_concept.extend([c] * len(ids))
    arrays: Dict[str, np.ndarray] = {}
    for key, strings in (("names", names), ("ids", all_ids), ("preferred", preferred_list),
                         ("definitions", definition_list),
                         ("types", [_TYPE_SEP.join(types.get(c, ())) for c in range(n_con)]),
                         ("aliases", [_TYPE_SEP.join(ids) for ids in alias_lists])):
        arrays[f"{key}_blob"], arrays[f"{key}_offsets"] = encode_strings(strings)
    arrays["names_order"] = sorted_order(names)
    arrays["ids_order"] = sorted_order(all_ids)
    arrays["id_concept"] = np.asarray(id_concept, dtype=np.int32)
    arrays["has_preferred"] = np.asarray([p is not None for p in preferred_list], dtype=np.uint8)
    arrays["has_definition"] = np.asarray([d is not None for d in definition_list], dtype=np.uint8)
    arrays["pref_explicit"] = np.asarray([c in pref_explicit for c in range(n_con)], dtype=np.uint8)
    return arrays


def tables(arrays: Dict[str, np.ndarray], num_concepts: int) -> Dict[str, Any]:
    """The KB's table attributes as views over ``arrays`` (see :func:`table_arrays`)."""
    strings = {key: MappedStrings(arrays[f"{key}_blob"], arrays[f"{key}_offsets"])
               for key in ("names", "ids", "preferred", "definitions", "types", "aliases")}
    return {
        "names": strings["names"],
        "_name_to_idx": SortedLookup(strings["names"], arrays["names_order"]),
        "concept_ids": MappedStrings(strings["ids"].blob, strings["ids"].offsets[: num_concepts + 1]),
        "_id_to_concept": SortedLookup(strings["ids"], arrays["ids_order"], arrays["id_concept"]),
        "_preferred": OptionalStrings(strings["preferred"], arrays["has_preferred"]),
        "_definitions": OptionalStrings(strings["definitions"], arrays["has_definition"]),
        "_types": SplitStrings(strings["types"], _TYPE_SEP),
        "_aliases": SplitStrings(strings["aliases"], _TYPE_SEP),
        "_pref_explicit": Flags(arrays["pref_explicit"]),
    }


def map_tables(kb: Any, d: Path, filename: str, meta: Dict[str, Any], sized_files: Sequence[str]) -> None:
    """Point an empty KB's tables at the mapped arrays of ``d / filename``, checked against ``kb.json``'s
    ``meta`` and the sizes of the text files saved with them (:class:`KBFormatError` E187 otherwise)."""
    path = d / filename
    try:
        arrays, info = read_arrays(path, mmap=True)
        sizes = json.loads(info.get("sizes", "{}"))
    except (OSError, ValueError) as e:
        raise KBFormatError(Errors.E180.format(err=e), path) from e
    n, n_con = meta["num_names"], meta["num_concepts"]
    checks = {"fingerprint": info.get("fingerprint") == meta.get("fingerprint"),
              "names": info.get("num_names") == str(n) and len(arrays.get("names_order", ())) == n,
              "concepts": info.get("num_concepts") == str(n_con) and len(arrays.get("concept_ptr", ())) == n_con + 1,
              "name arrays": len(arrays.get("name_ptr", ())) == n + 1}
    checks.update({f"{f} was edited after the save": (d / f).stat().st_size == sizes.get(f) for f in sized_files})
    for what, ok in checks.items():
        if not ok:
            raise KBFormatError(Errors.E187.format(what=what), path)
    try:
        for attr, view in tables(arrays, n_con).items():
            setattr(kb, attr, view)
        kb._csr = (arrays["name_ptr"], arrays["name_concepts"])
        kb._rev = (arrays["concept_ptr"], arrays["concept_names"])
    except KeyError as e:
        raise KBFormatError(Errors.E187.format(what=f"no {e} array"), path) from e
    kb._pair_names = kb._pair_concepts = None
    kb._fingerprint = meta["fingerprint"]
    kb._mapped_from = d


def materialize(kb: Any) -> None:
    """Copy a mapped KB's tables into the in-memory ones (lists, dicts), so that it can grow."""
    n_con = len(kb.concept_ids)
    kb.names = list(kb.names)
    kb._name_to_idx = {name: i for i, name in enumerate(kb.names)}
    kb.concept_ids = list(kb.concept_ids)
    kb._aliases = {c: list(a) for c in range(n_con) if (a := kb._aliases.get(c, ()))}
    kb._id_to_concept = {cid: c for c, cid in enumerate(kb.concept_ids)}
    for c, aliases in kb._aliases.items():
        kb._id_to_concept.update(dict.fromkeys(aliases, c))
    kb._preferred = [kb._preferred[c] for c in range(n_con)]
    kb._definitions = {c: d for c in range(n_con) if (d := kb._definitions.get(c)) is not None}
    kb._types = {c: t for c in range(n_con) if (t := kb._types.get(c, ()))}
    kb._pref_explicit = {c for c in range(n_con) if c in kb._pref_explicit}
    kb._csr = (np.array(kb._csr[0]), np.array(kb._csr[1]))
    kb._rev = None
    kb._mapped_from = None
