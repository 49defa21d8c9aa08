"""KB source formats: one loader per format, the ``LOADERS`` table, and :func:`load_kb`.

Users point ``kb build`` at whatever they downloaded, so every reader fails loudly, naming file,
line and field, instead of building a silently smaller KB. Files are strict UTF-8 (an invalid byte
is an error, never a U+FFFD inside a name); ``.gz`` is recognised by its magic bytes. A loader is
``loader(kb, path, **options)``: it adds the file's names to ``kb`` and ignores other formats'
options. :func:`load_kb` is how the CLI, the component and training load "a KB directory or file".
"""
from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from spacy_angel.errors import Errors, KBFormatError
from spacy_angel.kb.normalize import normalize_id
from spacy_angel.kb.source_text import open_source_text, read_error, source_lines, strip_gz, utf8_error
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.types import PathLike

Loader = Callable[..., None]


_OBO_SCOPES = ("EXACT", "RELATED", "BROAD", "NARROW")


def load_tsv(kb: KnowledgeBase, path: Path, **_: Any) -> None:
    """``id<TAB>name[<TAB>definition]``; ``#`` comments and blank lines skipped."""
    for lineno, line in source_lines(path):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise KBFormatError(Errors.E144, path, lineno, "name")
        if not fields[0].strip() or not normalize_id(fields[0]):
            raise KBFormatError(Errors.E145, path, lineno, "id")
        if not fields[1].strip():
            raise KBFormatError(Errors.E146, path, lineno, "name")
        definition = fields[2] if len(fields) > 2 and fields[2].strip() else None
        kb.add(fields[0], fields[1], definition=definition)


def _split_ids(field: str) -> List[str]:
    return [i for i in (normalize_id(x) for x in field.split("|")) if i]


def _add_multi(kb: KnowledgeBase, ids: List[str], names: Iterable[str], first_preferred: bool = False) -> None:
    """Add names for a concept known under several ids; if one id is already known (as primary
    or alias), the line joins that concept rather than creating a second one."""
    primary = ids[0]
    for i in ids:
        cid = kb.canonical_id(i)
        if cid is not None:
            primary = cid
            break
    kb.add_alias_ids(primary, ids)
    for k, n in enumerate(names):
        kb.add(primary, n, preferred=first_preferred and k == 0)


def load_biosyn(kb: KnowledgeBase, path: Path, **_: Any) -> None:
    """BioSyn ``ID1|ID2||name`` and the BioSyn MEDIC ``IDS||name|synonym|...`` (names '|'-split)."""
    for lineno, line in source_lines(path):
        if not line.strip():
            continue
        if "||" not in line:
            raise KBFormatError(Errors.E147, path, lineno)
        id_field, name_field = line.split("||", 1)
        ids = _split_ids(id_field)
        if not ids:
            raise KBFormatError(Errors.E145, path, lineno, "id")
        names = [n for n in name_field.split("|") if n.strip()]
        if not names:
            raise KBFormatError(Errors.E146, path, lineno, "name")
        _add_multi(kb, ids, names)


def _medic_id(raw: str) -> str:
    """CTD ids: ``MESH:``/``OMIM:`` dropped by normalize_id; ``DO:DOID:n`` -> ``DOID:n`` (the DO id)."""
    s = raw.strip()
    if s[:8].upper() == "DO:DOID:":
        s = s[3:]
    return normalize_id(s)


def load_medic(kb: KnowledgeBase, path: Path, **_: Any) -> None:
    """CTD MEDIC TSV (DiseaseName, DiseaseID, AltDiseaseIDs, Definition, ..., Synonyms, ...).
    A BioSyn-style MEDIC file (``IDS||names``) is delegated to the biosyn loader."""
    for lineno, line in source_lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        if "\t" not in line and "||" in line:
            load_biosyn(kb, path)
            return
        break
    for lineno, line in source_lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split("\t")
        if len(f) < 2:
            raise KBFormatError(Errors.E148.format(found=len(f)), path, lineno)
        f += [""] * (9 - len(f))
        name, did = f[0], _medic_id(f[1])
        if not did:
            raise KBFormatError(Errors.E145, path, lineno, "DiseaseID")
        if not name.strip():
            raise KBFormatError(Errors.E146, path, lineno, "DiseaseName")
        kb.add(did, name, definition=f[3] or None, preferred=True)
        kb.add_alias_ids(did, [_medic_id(a) for a in f[2].split("|") if a.strip()])
        for syn in f[7].split("|"):
            if syn.strip():
                kb.add(did, syn)


_OBO_ESC = {"n": "\n", "t": "\t", "W": " "}


def _obo_quoted(value: str) -> Tuple[Optional[str], str]:
    """Parse a leading ``"..."`` (backslash escapes honoured); return (text, rest of line)."""
    v = value.lstrip()
    if not v.startswith('"'):
        return None, v
    out: List[str] = []
    i = 1
    while i < len(v):
        ch = v[i]
        if ch == "\\" and i + 1 < len(v):
            out.append(_OBO_ESC.get(v[i + 1], v[i + 1]))
            i += 2
            continue
        if ch == '"':
            return "".join(out), v[i + 1 :]
        out.append(ch)
        i += 1
    return None, v  # unterminated


def _obo_unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: _OBO_ESC.get(m.group(1), m.group(1)), value)


def load_obo(kb: KnowledgeBase, path: Path, *, synonym_scopes: Optional[Sequence[str]] = None, **_: Any) -> None:
    """OBO 1.2/1.4 ``[Term]`` stanzas: id, name, synonyms (scope filter), def, alt_id; obsolete skipped."""
    scopes = {s.upper() for s in (synonym_scopes or _OBO_SCOPES)}
    old_tags = {f"{scope.lower()}_synonym": scope for scope in _OBO_SCOPES}  # OBO 1.0 exact_synonym: ... tags
    term: Optional[dict] = None

    def flush(t: Optional[dict]) -> None:
        if t is None or t.get("obsolete") or not t.get("id"):
            return
        tid = t["id"]
        if t.get("name"):
            kb.add(tid, t["name"], definition=t.get("def"), preferred=True)
        elif t.get("def"):
            kb.add(tid, "", definition=t["def"])
        for syn in t["syn"]:
            kb.add(tid, syn)
        if t["alt"]:
            kb.add_alias_ids(tid, t["alt"])

    for lineno, line in source_lines(path):
        s = line.strip()
        if not s or s.startswith("!"):
            continue
        if s.startswith("["):
            flush(term)
            term = {"syn": [], "alt": [], "line": lineno} if s == "[Term]" else None
            continue
        if term is None or ":" not in s:
            continue
        tag, value = s.split(":", 1)
        value = value.strip()
        if tag == "id":
            term["id"] = _obo_unescape(value.split(" !", 1)[0].strip())
            if not normalize_id(term["id"]):
                raise KBFormatError(Errors.E145, path, lineno, "id")
        elif tag == "name":
            term["name"] = _obo_unescape(value)
        elif tag == "def":
            text, _ = _obo_quoted(value)
            if text is None:
                raise KBFormatError(Errors.E149, path, lineno, "def")
            term["def"] = text
        elif tag == "synonym" or tag in old_tags:
            text, rest = _obo_quoted(value)
            if text is None:
                raise KBFormatError(Errors.E150, path, lineno, "synonym")
            scope = old_tags.get(tag)
            if scope is None:
                tok = rest.split()
                scope = tok[0].upper() if tok and tok[0].upper() in _OBO_SCOPES else "RELATED"
            if scope in scopes:
                term["syn"].append(text)
        elif tag == "alt_id":
            term["alt"].append(value.split(" !", 1)[0].strip())
        elif tag == "is_obsolete" and value.lower().startswith("true"):
            term["obsolete"] = True
    flush(term)


_SUPPRESSED = {"O", "E", "Y"}


def _sibling(path: Path, name: str) -> Optional[Path]:
    return next((c for c in (path.parent / name, path.parent / (name + ".gz")) if c.is_file()), None)


def _rrf_rows(path: Path, nfields: int) -> Iterator[Tuple[int, List[str]]]:
    """RRF rows: ``nfields`` pipe-separated fields plus the trailing ``|``; other counts are errors."""
    for lineno, line in source_lines(path):
        if not line:
            continue
        f = line.split("|")
        if len(f) == nfields + 1 and f[-1] == "":
            f.pop()
        if len(f) != nfields:
            raise KBFormatError(Errors.E151.format(expected=nfields, found=len(f)), path, lineno)
        yield lineno, f


def load_umls(kb: KnowledgeBase, path: Path, *, languages: Optional[Sequence[str]] = ("ENG",),
              sources: Optional[Sequence[str]] = None, semantic_types: Optional[Sequence[str]] = None,
              mrdef: Optional[PathLike] = None, mrsty: Optional[PathLike] = None, **_: Any) -> None:
    """UMLS MRCONSO (+ MRSTY for semantic types/filter, + MRDEF for definitions), streaming."""
    langs = {x.upper() for x in languages} if languages else None
    sabs = set(sources) if sources else None
    sty_path = Path(mrsty) if mrsty else _sibling(path, "MRSTY.RRF")
    if semantic_types and sty_path is None:
        raise KBFormatError(Errors.E152, path)
    cui_types: Dict[str, List[str]] = {}  # CUI -> TUIs (stored on the concepts)
    wanted = set(semantic_types) if semantic_types else None
    allowed: Optional[Set[str]] = set() if wanted is not None else None
    if sty_path is not None:
        for _, f in _rrf_rows(sty_path, 6):  # CUI|TUI|STN|STY|ATUI|CVF
            cui_types.setdefault(f[0], []).append(f[1])
            if allowed is not None and wanted is not None and (f[1] in wanted or f[3] in wanted):
                allowed.add(f[0])
    typed: Set[str] = set()
    for lineno, f in _rrf_rows(path, 18):
        cui, lat, ts, stt, ispref, sab, sup, name = f[0], f[1], f[2], f[4], f[6], f[11], f[16], f[14]
        if not normalize_id(cui):
            raise KBFormatError(Errors.E153, path, lineno, "CUI")
        if ((langs is not None and lat.upper() not in langs) or (sabs is not None and sab not in sabs)
                or sup in _SUPPRESSED or (allowed is not None and cui not in allowed)):
            continue
        types: Sequence[str] = ()
        if cui not in typed and cui in cui_types:
            types = cui_types[cui]
            typed.add(cui)
        kb.add(cui, name, semantic_types=types, preferred=(ts == "P" and stt == "PF" and ispref == "Y"))
    del cui_types, typed
    def_path = Path(mrdef) if mrdef else _sibling(path, "MRDEF.RRF")
    if def_path is not None:
        for _, f in _rrf_rows(def_path, 8):  # CUI|AUI|ATUI|SATUI|SAB|DEF|SUPPRESS|CVF
            if f[6] not in _SUPPRESSED and f[0] in kb:
                kb.add(f[0], "", definition=f[5])  # the first definition of a concept is kept


def load_json(kb: KnowledgeBase, path: Path, **_: Any) -> None:
    """``{id: [name, ...]}`` or ``{id: [[kind, name], ...]}`` (rescnn ontology JSON; kind
    ``primary`` = preferred). ``ID1|ID2`` keys are one concept with several ids."""
    try:
        with open_source_text(path) as fh:
            text = fh.read()
        data = json.loads(text)
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except (OSError, EOFError, zlib.error) as e:
        raise read_error(path, 1, e) from None
    except RecursionError:
        raise KBFormatError(Errors.E154, path) from None
    except ValueError as e:
        raise KBFormatError(Errors.E155.format(err=e), path, getattr(e, "lineno", None)) from e
    if not isinstance(data, dict):
        raise KBFormatError(Errors.E156, path, 1)

    def line_of(key: str) -> Optional[int]:
        """The line where ``key`` is written, so that an error about its entry points there."""
        for spelled in dict.fromkeys((json.dumps(key, ensure_ascii=False), json.dumps(key))):
            m = re.search(re.escape(spelled) + r"\s*:", text)
            if m:
                return text.count("\n", 0, m.start()) + 1
        return None

    for key, entries in data.items():
        ids = _split_ids(str(key))
        if not ids:
            raise KBFormatError(Errors.E157.format(key=key), path, line_of(key), "id")
        if isinstance(entries, str):
            entries = [entries]
        if not isinstance(entries, list):
            raise KBFormatError(Errors.E158.format(key=key), path, line_of(key), "names")
        names: List[str] = []
        pref_first = False
        for e in entries:
            if isinstance(e, str):
                names.append(e)
            elif isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e):
                if e[0] == "primary":
                    names.insert(0, e[1])
                    pref_first = True
                else:
                    names.append(e[1])
            else:
                raise KBFormatError(Errors.E159.format(entry=e, key=key), path, line_of(key), "names")
        _add_multi(kb, ids, names, first_preferred=pref_first)


#: Format name -> loader; ``FORMATS`` (and the CLI's ``--format`` help) follow this table.
LOADERS: Dict[str, Loader] = {"tsv": load_tsv, "biosyn": load_biosyn, "medic": load_medic, "obo": load_obo,
                              "umls": load_umls, "json": load_json}


FORMATS: Tuple[str, ...] = tuple(LOADERS)


def detect_format(path: PathLike) -> str:
    """One of ``FORMATS`` from the file name and first non-comment line; unknown files are an error."""
    p = Path(path)
    low = strip_gz(p.name).lower()
    if "mrconso" in low:
        return "umls"
    if low.endswith(".obo"):
        return "obo"
    if low.endswith(".json"):
        return "json"
    if not p.is_file():
        raise KBFormatError(Errors.E160, p)
    medic_header = False
    seen_text = False
    try:
        for lineno, line in source_lines(p):
            s = line.strip()
            if not s:
                continue
            seen_text = True
            if s.startswith("format-version:") or s.startswith("[Term]"):
                return "obo"
            if s.startswith("#"):
                if "DiseaseName" in s or "DiseaseID" in s:
                    medic_header = True
                if lineno > 1000:
                    break
                continue
            if medic_header:
                return "medic"
            if s.startswith("{") or s.startswith("["):
                return "json"
            if "\t" in line and "||" not in line.split("\t", 1)[0]:
                return "medic" if line.count("\t") == 8 else "tsv"
            if "||" in line:
                return "biosyn"
            if line.count("|") >= 18 and low.endswith(".rrf"):
                return "umls"
            break
    except (OSError, EOFError, zlib.error) as e:
        raise KBFormatError(Errors.E161.format(err=e), p) from e
    if medic_header:
        return "medic"
    if not seen_text:
        raise KBFormatError(Errors.E162, p)
    raise KBFormatError(Errors.E163.format(formats=", ".join(FORMATS)), p)


def load_files(paths: Union[PathLike, Sequence[PathLike]], format: str = "auto", lowercase: bool = True, *,
               languages: Optional[Sequence[str]] = ("ENG",), sources: Optional[Sequence[str]] = None,
               semantic_types: Optional[Sequence[str]] = None, mrdef: Optional[PathLike] = None,
               mrsty: Optional[PathLike] = None, synonym_scopes: Optional[Sequence[str]] = None) -> KnowledgeBase:
    """Build a KB from one or more source files (with ``auto``, each file's format is detected).

    UMLS options: ``languages`` (LAT; ``None`` = all), ``sources`` (SAB; ``None`` = all),
    ``semantic_types`` (TUIs or STY names; needs ``mrsty``, else ``MRSTY.RRF`` next to
    MRCONSO), ``mrdef`` for definitions. ``synonym_scopes`` restricts OBO synonyms.
    A file that contributes no name is an error (a wrong ``format`` usually causes it).
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    options = dict(languages=languages, sources=sources, semantic_types=semantic_types, mrdef=mrdef, mrsty=mrsty,
                   synonym_scopes=synonym_scopes)
    kb = KnowledgeBase(lowercase=lowercase)
    for p in map(Path, paths):
        if not p.is_file():
            raise KBFormatError(Errors.E160, p)
        fmt = detect_format(p) if format == "auto" else format
        loader = LOADERS.get(fmt)
        if loader is None:
            raise KBFormatError(Errors.E164.format(fmt=fmt, formats=", ".join(FORMATS)), p)
        before = kb._n_added
        loader(kb, p, **options)
        if kb._n_added == before:
            raise KBFormatError(Errors.E165.format(paths=p), p)
    if kb.num_names == 0:
        raise KBFormatError(Errors.E165.format(paths=", ".join(map(str, paths))), paths[0] if paths else None)
    kb._freeze()
    return kb


def load_kb(
    path_or_dir: Union[KnowledgeBase, PathLike, Sequence[PathLike]], format: str = "auto", **options: Any
) -> KnowledgeBase:
    """A KB directory written by ``kb build`` / :meth:`KnowledgeBase.to_disk`, or KB file(s) in any
    format; ``format`` and ``options`` (see :func:`load_files`) apply to files only. A
    :class:`KnowledgeBase` passes through, so every caller can take "a KB object, directory or file"."""
    if isinstance(path_or_dir, KnowledgeBase):
        return path_or_dir
    if isinstance(path_or_dir, (str, os.PathLike)):
        p = Path(path_or_dir)
        if not p.exists():
            raise FileNotFoundError(Errors.E166.format(path=p))
        if p.is_dir():
            if format != "auto" or options:
                raise ValueError(Errors.E167.format(path=p))
            return KnowledgeBase.from_disk(p)
    return load_files(path_or_dir, format=format, **options)
