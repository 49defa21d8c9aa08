"""Knowledge base (concept ids, names, definitions) for generative entity linking.

The decoder generates *names*; the KB maps every normalised name back to the concept ids it
denotes, so it must be exact about normalisation (the same rule builds the prefix trie and
answers lookups) and compact enough for UMLS-sized vocabularies (~6M names). Hence: names in
one list (index = name index, used by the trie), a ``dict`` name -> index for O(1) lookups,
and the name -> concept relation as int32 CSR arrays instead of per-name Python lists.

Reading source files (TSV, BioSyn, MEDIC, OBO, UMLS, JSON) lives in :mod:`spacy_angel.kb.readers`;
this module holds the KB itself and its own directory format. No spaCy / torch imports here.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from array import array
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from spacy_angel.errors import Errors, KBFormatError
from spacy_angel.fileio import atomic_directory
from spacy_angel.kb.mapped import map_tables, materialize, table_arrays
from spacy_angel.kb.normalize import normalize_id, normalize_name
from spacy_angel.mapped_arrays import write_arrays

PathLike = Union[str, "os.PathLike[str]"]


FORMAT_VERSION = 1


#: What :meth:`KnowledgeBase.to_disk` writes; ``kb.json`` is the manifest that marks a KB directory.
KB_FILES: Tuple[str, ...] = ("kb.json", "names.txt", "concepts.jsonl", "name_ptr.npy", "name_concepts.npy")


#: the same tables as flat arrays to memory-map (spacy_angel.kb.mapped); KB folders written before it lack it
MAPPED_FILE = "kb.safetensors"


#: files whose sizes ``kb.safetensors`` records: one edited after the save makes the mapped tables stale
SIZED_FILES: Tuple[str, ...] = ("names.txt", "concepts.jsonl", "name_ptr.npy", "name_concepts.npy")


#: may sit beside them (spacy_angel.retrieval.tfidf; tfidf.npz is its format 1)
_COMPANION_FILES: Tuple[str, ...] = (MAPPED_FILE, "tfidf.json", "tfidf.safetensors", "tfidf.npz")


def is_kb_directory(path: PathLike) -> bool:
    """True for a directory holding our ``kb.json`` manifest and only files a KB save writes, so that
    replacing it can only destroy a KB we wrote (a damaged ``kb.json`` counts: a new save repairs it)."""
    d = Path(path)
    if not (d / "kb.json").is_file():
        return False
    own = set(KB_FILES) | set(_COMPANION_FILES)
    if any(e.name not in own and not (e.name.startswith(".") and e.name.endswith(".tmp")) for e in d.iterdir()):
        return False  # a file of the user's (temp files of an interrupted index save are ours)
    try:
        meta = json.loads((d / "kb.json").read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return True
    return not isinstance(meta, dict) or meta.get("format") == "spacy_angel.kb.store"


def check_kb_output(path: PathLike, overwrite: bool = False) -> None:
    """Refuse a file, or a non-empty directory that is not our KB directory: a mistyped ``--output``
    must not delete a user's files. ``overwrite`` replaces it anyway."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(Errors.E170.format(path=target))
    if overwrite or not target.is_dir():
        return
    entries = sorted(e.name for e in target.iterdir())
    if entries and not is_kb_directory(target):
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise FileExistsError(Errors.E171.format(path=target, shown=shown))


@contextlib.contextmanager
def kb_directory(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """A temp dir that replaces ``path`` once the block succeeds (after :func:`check_kb_output`); the old
    KB stays until the new one is complete, so no loader ever finds a half-written KB."""
    check_kb_output(path, overwrite)
    with atomic_directory(path) as tmp:
        yield tmp


class KnowledgeBase:
    """Concepts (primary id + alias ids, preferred name, definition, semantic types) and names.

    Names are normalised with :func:`normalize_name` (``lowercase`` decides case folding) and
    deduplicated; ``names[i]`` is name index ``i`` (stable insertion order, the trie's key).
    Ids are normalised with :func:`normalize_id`. A name may denote several concepts.
    """

    def __init__(self, lowercase: bool = True) -> None:
        self.lowercase: bool = bool(lowercase)
        self.names: List[str] = []
        self._name_to_idx: Dict[str, int] = {}
        self.concept_ids: List[str] = []
        self._id_to_concept: Dict[str, int] = {}  # primary and alias ids -> concept index
        self._aliases: Dict[int, List[str]] = {}  # sparse: most concepts have none
        self._preferred: List[Optional[str]] = []
        self._pref_explicit: Set[int] = set()
        self._definitions: Dict[int, str] = {}
        self._types: Dict[int, Tuple[str, ...]] = {}
        # (name index, concept index) pairs while building; CSR arrays once frozen.
        self._pair_names: Optional[array] = array("i")
        self._pair_concepts: Optional[array] = array("i")
        self._csr: Optional[Tuple[np.ndarray, np.ndarray]] = None  # name_ptr, name_concepts
        self._rev: Optional[Tuple[np.ndarray, np.ndarray]] = None  # concept_ptr, concept_names
        self._fingerprint: Optional[str] = None
        self._n_added = 0  # non-empty names added (for the per-file "no names found" check)
        self._mapped_from: Optional[Path] = None  # set by from_disk(mmap=True): the tables are mapped views

    # ------------------------------------------------------------------ building
    def _concept(self, kb_id: str, create: bool) -> Optional[int]:
        nid = normalize_id(kb_id)
        if not nid:
            if create:
                raise ValueError(Errors.E172.format(kb_id=kb_id))
            return None
        c = self._id_to_concept.get(nid)
        if c is None and create:
            c = len(self.concept_ids)
            self.concept_ids.append(nid)
            self._id_to_concept[nid] = c
            self._preferred.append(None)
        return c

    def _thaw(self) -> None:
        """Turn frozen CSR arrays back into growable pair arrays (adding after load/lookup)."""
        if self._pair_names is None:
            assert self._csr is not None
            ptr, cons = self._csr
            self._pair_names = array("i", np.repeat(np.arange(len(ptr) - 1, dtype=np.int32), np.diff(ptr)).tolist())
            self._pair_concepts = array("i", cons.astype(np.int32).tolist())
        self._csr = None
        self._rev = None

    def add(self, kb_id: str, name: str, definition: Optional[str] = None, semantic_types: Sequence[str] = (),
            preferred: bool = False) -> None:
        """Add one (id, name) pair, creating the concept if needed.

        The first name of a concept is its display name unless a later call passes
        ``preferred=True`` (the first such call wins). The first non-empty definition is kept;
        semantic types accumulate. Empty names are ignored (the concept is still created).
        """
        self._check_writable()
        c = self._concept(kb_id, create=True)
        assert c is not None
        if definition:
            d = " ".join(definition.split())
            if d and c not in self._definitions:
                self._definitions[c] = d
        if semantic_types:
            old = self._types.get(c, ())
            new = old + tuple(t for t in dict.fromkeys(semantic_types) if t and t not in old)
            if new:
                self._types[c] = new
        display = normalize_name(name, lowercase=False)
        if not display:
            return
        norm = display.lower() if self.lowercase else display
        if preferred and c not in self._pref_explicit:
            self._preferred[c] = display
            self._pref_explicit.add(c)
        elif self._preferred[c] is None:
            self._preferred[c] = display
        idx = self._name_to_idx.get(norm)
        if idx is None:
            idx = len(self.names)
            self.names.append(norm)
            self._name_to_idx[norm] = idx
            self._fingerprint = None
        if self._pair_names is None:
            self._thaw()
        assert self._pair_names is not None and self._pair_concepts is not None
        self._pair_names.append(idx)
        self._pair_concepts.append(c)
        self._n_added += 1

    def add_alias_ids(self, kb_id: str, other_ids: Sequence[str]) -> None:
        """Declare ``other_ids`` as further ids of ``kb_id``'s concept (BioSyn ``ID1|ID2``,
        MEDIC AltDiseaseIDs). An id already bound to a *different* concept keeps its first
        binding: some sources share one alt id between several concepts, and merging them
        would silently fuse distinct diseases."""
        self._check_writable()
        c = self._concept(kb_id, create=True)
        assert c is not None
        for raw in other_ids:
            oid = normalize_id(raw)
            if not oid or oid in self._id_to_concept:
                continue
            self._id_to_concept[oid] = c
            self._aliases.setdefault(c, []).append(oid)

    def _check_writable(self) -> None:
        """A mapped KB that is added to first copies its tables into memory (copy on write)."""
        if self._mapped_from is not None:
            materialize(self)

    # ------------------------------------------------------------------ frozen views
    def _freeze(self) -> Tuple[np.ndarray, np.ndarray]:
        """Deduplicate pairs and build the name -> concepts CSR (lazily, once per edit batch)."""
        if self._csr is None:
            assert self._pair_names is not None and self._pair_concepts is not None
            n_names, n_con = len(self.names), max(len(self.concept_ids), 1)
            names = np.frombuffer(self._pair_names, dtype=np.int32).astype(np.int64) if len(self._pair_names) else np.zeros(0, np.int64)
            cons = np.frombuffer(self._pair_concepts, dtype=np.int32).astype(np.int64) if len(self._pair_concepts) else np.zeros(0, np.int64)
            keys = np.unique(names * n_con + cons)
            pn, pc = keys // n_con, (keys % n_con).astype(np.int32)
            ptr = np.zeros(n_names + 1, dtype=np.int64)
            np.cumsum(np.bincount(pn, minlength=n_names), out=ptr[1:])
            self._csr = (ptr, pc)
            self._pair_names = None
            self._pair_concepts = None
        return self._csr

    def _reverse(self) -> Tuple[np.ndarray, np.ndarray]:
        if self._rev is None:
            ptr, cons = self._freeze()
            name_of_pair = np.repeat(np.arange(len(ptr) - 1, dtype=np.int32), np.diff(ptr))
            order = np.argsort(cons, kind="stable")
            cptr = np.zeros(len(self.concept_ids) + 1, dtype=np.int64)
            np.cumsum(np.bincount(cons, minlength=len(self.concept_ids)), out=cptr[1:])
            self._rev = (cptr, name_of_pair[order])
        return self._rev

    # ------------------------------------------------------------------ lookups
    def name_index(self, name: str) -> Optional[int]:
        """Index of a name (normalised with this KB's rule), ``None`` if absent."""
        return self._name_to_idx.get(normalize_name(name, self.lowercase))

    def ids_for_index(self, name_idx: int) -> Tuple[str, ...]:
        """Primary ids of the concepts that name ``name_idx`` denotes (concept insertion order)."""
        if not 0 <= name_idx < len(self.names):
            raise IndexError(Errors.E173.format(idx=name_idx, last=len(self.names) - 1))
        ptr, cons = self._freeze()
        return tuple(self.concept_ids[c] for c in cons[ptr[name_idx] : ptr[name_idx + 1]].tolist())

    def ids_for(self, name: str) -> Tuple[str, ...]:
        """Primary ids denoted by ``name`` (normalised); ``()`` if unknown."""
        idx = self.name_index(name)
        return () if idx is None else self.ids_for_index(idx)

    def name_indices_for(self, kb_id: str) -> Tuple[int, ...]:
        """Indices of the names of the concept that ``kb_id`` (primary or alias) identifies, read off the
        concept -> names CSR. Why not ``name_index`` per name: at 1M names each look-up is a binary
        search over the mapped strings, and DPO pair mining spent minutes in them."""
        c = self._concept(kb_id, create=False)
        if c is None:
            return ()
        cptr, cnames = self._reverse()
        return tuple(cnames[cptr[c] : cptr[c + 1]].tolist())

    def names_for(self, kb_id: str) -> Tuple[str, ...]:
        """Normalised names of the concept that ``kb_id`` (primary or alias) identifies."""
        return tuple(self.names[i] for i in self.name_indices_for(kb_id))

    def canonical_id(self, kb_id: str) -> Optional[str]:
        """Primary id of the concept ``kb_id`` belongs to (alias resolution), ``None`` if unknown."""
        c = self._concept(kb_id, create=False)
        return None if c is None else self.concept_ids[c]

    def all_ids(self, kb_id: str) -> Tuple[str, ...]:
        """Primary id followed by its alias ids; ``()`` if unknown."""
        c = self._concept(kb_id, create=False)
        if c is None:
            return ()
        return (self.concept_ids[c],) + tuple(self._aliases.get(c, ()))

    def preferred_name(self, kb_id: str) -> Optional[str]:
        """Display name in its original case (whitespace/NFKC-normalised only)."""
        c = self._concept(kb_id, create=False)
        return None if c is None else self._preferred[c]

    def definition(self, kb_id: str) -> Optional[str]:
        c = self._concept(kb_id, create=False)
        return None if c is None else self._definitions.get(c)

    def semantic_types(self, kb_id: str) -> Tuple[str, ...]:
        c = self._concept(kb_id, create=False)
        return () if c is None else self._types.get(c, ())

    def __len__(self) -> int:
        return len(self.concept_ids)

    def __contains__(self, kb_id: object) -> bool:
        return isinstance(kb_id, str) and self._concept(kb_id, create=False) is not None

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        """``(primary id, normalised name)`` pairs, concept by concept (training data for the decoder)."""
        cptr, cnames = self._reverse()
        names = self.names
        for c, cid in enumerate(self.concept_ids):
            for i in cnames[cptr[c] : cptr[c + 1]].tolist():
                yield cid, names[i]

    @property
    def num_names(self) -> int:
        return len(self.names)

    def fingerprint(self) -> str:
        """sha256 of the lowercase flag and the ordered names: a trie built for another KB is stale."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(b"lowercase=1\n" if self.lowercase else b"lowercase=0\n")
            for n in self.names:
                h.update(n.encode("utf-8"))
                h.update(b"\n")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"KnowledgeBase({len(self)} concepts, {self.num_names} names, lowercase={self.lowercase})"

    # ------------------------------------------------------------------ persistence
    def to_disk(self, path: PathLike, *, overwrite: bool = False) -> None:
        """Write the KB directory atomically; ``overwrite``: see :func:`check_kb_output`."""
        with kb_directory(path, overwrite=overwrite) as tmp:
            self.write_files(tmp)

    def write_files(self, directory: PathLike) -> None:
        """``kb.json``, ``names.txt``, ``concepts.jsonl``, two CSR ``.npy`` into ``directory`` (a kb_directory)."""
        d = Path(directory)
        ptr, cons = self._freeze()
        with open(d / "names.txt", "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(n + "\n" for n in self.names)
        with open(d / "concepts.jsonl", "w", encoding="utf-8", newline="\n") as fh:
            for c, cid in enumerate(self.concept_ids):
                rec = [cid, self._aliases.get(c, []), self._preferred[c], self._definitions.get(c),
                       list(self._types.get(c, ())), c in self._pref_explicit]
                fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
                fh.write("\n")
        np.save(d / "name_ptr.npy", ptr.astype(np.int64), allow_pickle=False)
        np.save(d / "name_concepts.npy", cons.astype(np.int32), allow_pickle=False)
        meta = {"format": "spacy_angel.kb.store", "format_version": FORMAT_VERSION, "lowercase": self.lowercase,
                "num_concepts": len(self.concept_ids), "num_names": len(self.names), "num_pairs": int(len(cons)),
                "fingerprint": self.fingerprint()}
        cptr, cnames = self._reverse()
        arrays = table_arrays(self.names, self.concept_ids, self._aliases, self._preferred, self._definitions,
                              self._types, self._pref_explicit)
        arrays.update(name_ptr=ptr.astype(np.int64), name_concepts=cons.astype(np.int32),
                      concept_ptr=cptr.astype(np.int64), concept_names=cnames.astype(np.int32))
        sizes = {f: (d / f).stat().st_size for f in SIZED_FILES}  # an edited text file is then seen as such
        write_arrays(d / MAPPED_FILE, arrays, {"fingerprint": meta["fingerprint"], "num_names": str(len(self.names)),
                                               "num_concepts": str(len(self.concept_ids)), "sizes": json.dumps(sizes)})
        with open(d / "kb.json", "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2)

    @classmethod
    def from_disk(cls, path: PathLike, *, mmap: bool = True) -> "KnowledgeBase":
        """Load a KB written by :meth:`to_disk`; missing or inconsistent files raise clearly.

        ``mmap`` (and a ``kb.safetensors`` in the folder): the tables are memory-mapped views, read-only,
        shared between processes; otherwise (or for folders written before it) they are read into memory.
        """
        d = Path(path)
        if not d.is_dir():
            raise FileNotFoundError(Errors.E174.format(path=d))
        for fname in (f for f in KB_FILES if not (d / f).is_file()):
            raise FileNotFoundError(Errors.E175.format(path=d, file=fname))
        meta = _read_meta(d / "kb.json")
        if mmap and (d / MAPPED_FILE).is_file():
            kb = cls(lowercase=bool(meta["lowercase"]))
            map_tables(kb, d, MAPPED_FILE, meta, SIZED_FILES)
            return kb
        kb = cls(lowercase=bool(meta["lowercase"]))
        with open(d / "names.txt", "r", encoding="utf-8", newline="\n") as fh:
            names = fh.read().split("\n")
        names = names[:-1] if names and names[-1] == "" else names
        if len(names) != meta["num_names"]:
            raise KBFormatError(Errors.E176.format(found=len(names), expected=meta["num_names"]), d / "names.txt")
        kb.names = names
        kb._name_to_idx = {n: i for i, n in enumerate(names)}
        if len(kb._name_to_idx) != len(names):
            raise KBFormatError(Errors.E177, d / "names.txt")
        with open(d / "concepts.jsonl", "r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    cid, aliases, pref, definition, types, explicit = json.loads(line)
                except ValueError as e:
                    raise KBFormatError(Errors.E178.format(err=e), d / "concepts.jsonl", lineno) from e
                c = len(kb.concept_ids)
                kb.concept_ids.append(cid)
                kb._id_to_concept[cid] = c
                kb._preferred.append(pref)
                if aliases:
                    kb._aliases[c] = aliases
                    kb._id_to_concept.update(dict.fromkeys(aliases, c))
                if definition is not None:
                    kb._definitions[c] = definition
                if types:
                    kb._types[c] = tuple(types)
                if explicit:
                    kb._pref_explicit.add(c)
        if len(kb.concept_ids) != meta["num_concepts"]:
            raise KBFormatError(Errors.E179.format(found=len(kb.concept_ids), expected=meta["num_concepts"]),
                                d / "concepts.jsonl")
        try:
            ptr = np.load(d / "name_ptr.npy", allow_pickle=False)
            cons = np.load(d / "name_concepts.npy", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise KBFormatError(Errors.E180.format(err=e), d) from e
        if (ptr.ndim != 1 or cons.ndim != 1 or len(ptr) != len(names) + 1 or int(ptr[0]) != 0
                or int(ptr[-1]) != len(cons) or (len(cons) and (cons.min() < 0 or cons.max() >= len(kb.concept_ids)))):
            raise KBFormatError(Errors.E181, d / "name_ptr.npy")
        kb._csr = (ptr.astype(np.int64, copy=False), cons.astype(np.int32, copy=False))
        kb._pair_names = kb._pair_concepts = None
        fp = meta.get("fingerprint")
        if fp is not None and kb.fingerprint() != fp:
            raise KBFormatError(Errors.E182, d / "kb.json")
        return kb


def _read_meta(path: Path) -> Dict[str, Any]:
    """``kb.json``, checked to be ours and of the version this code reads."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise KBFormatError(Errors.E183.format(err=e), path) from e
    if not isinstance(meta, dict) or meta.get("format") != "spacy_angel.kb.store":
        raise KBFormatError(Errors.E184, path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise KBFormatError(Errors.E185.format(version=meta.get("format_version"), expected=FORMAT_VERSION), path)
    return meta
