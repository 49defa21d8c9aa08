"""Corpus readers that turn entity-linking datasets into :class:`spacy_angel.types.Mention` records.

Why one record type: training, evaluation and the runtime all speak ``Mention`` (a surface in its
context plus normalised gold ids), so every dataset quirk is resolved here, once.

Supported formats
-----------------
* PubTator (NCBI-disease, BC5CDR): :func:`read_pubtator` -- mentions keep their document context;
  :func:`read_pubtator_documents` gives the documents with every annotation as written.
* BioSyn ``*.concept`` directories: :func:`read_biosyn_dir` -- already processed, bare mentions.
* AskAPatient folds: :func:`read_askapatient` -- bare mentions.
* spaCy ``DocBin`` with ``ent.kb_id_``: :func:`read_docbin`.
* :func:`read_corpus` picks one of the above from the path.

Gold ids
--------
Ids go through ``normalize_id`` ("MESH:D001943" -> "D001943", "OMIM:215600" -> "215600",
stray spaces stripped). ``-1`` (or ``NIL`` in a DocBin) marks a mention that annotators could
not normalise; such mentions are skipped and counted in the :class:`ReadReport`.

Composite and conjunct mentions
-------------------------------
* **Composite** (``D001943|D010051``, "breast and ovarian cancers"): the mention denotes
  several concepts. It becomes one ``Mention`` whose ``gold_ids`` holds all of them (PubTator,
  ``composite="keep"``), or -- where the parts are spelled out (BioSyn concept files; the
  PubTator 7th column with ``composite="split"``) -- one mention per part, aligned with its id.
* **Conjunct** (``D007153+D040181``): ONE mention that needs all listed concepts together.
  ``gold_ids`` holds all of them and the mention is recorded in ``MentionList.conjunct`` /
  ``ReadReport.conjunct`` (see :meth:`MentionList.is_conjunct`).

Training: a mention with several gold ids yields one target per concept (the decoder is trained
to generate each concept's name; one (mention, name) pair per id). Scoring follows the
ANGEL/BioSyn convention: a prediction is correct if ANY gold id is predicted -- for composite
and conjunct mentions alike.

Preprocessing (:func:`training.data.preprocess.preprocess`) lowercases and expands
abbreviations found in each mention's own document text (Schwartz–Hearst), mirroring the Ab3P step
BioSyn applied to its processed files, and can drop mentions none of whose ids is in the KB.
"""
from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

from spacy_angel.errors import CorpusFormatError, Errors
from spacy_angel.fileio import GZIP_MAGIC
from spacy_angel.kb.normalize import normalize_id
from spacy_angel.seq2seq.prompt import split_context
from spacy_angel.types import Mention
from training.data.records import MentionList, ReadReport

# ``preprocess`` normalises mentions rather than reading them; it lives in training.data.preprocess and
# stays importable from here (imported last: that module uses MentionList and ReadReport).


PathLike = Union[str, Path]


#: Id values that mean "annotators could not normalise this mention".
UNNORMALISABLE = frozenset({"-1", "NIL", "CUI-LESS"})


def _parse_ids(raw: str) -> Tuple[Tuple[str, ...], bool, bool, int]:
    """Split an id field into (ids, composite, conjunct, n_unnormalisable_tokens).

    ``|`` separates the concepts of a composite mention, ``+`` those of a conjunct one.
    Duplicates are dropped, order kept.
    """
    tokens = [t.strip() for t in re.split(r"[|+]", raw)]
    conjunct = "+" in raw
    composite = "|" in raw
    ids: List[str] = []
    bad = 0
    for tok in tokens:
        if not tok:
            continue
        if tok.upper() in UNNORMALISABLE:
            bad += 1
            continue
        nid = normalize_id(tok)
        if nid and nid not in ids:
            ids.append(nid)
    return tuple(ids), composite, conjunct, bad


def _gunzip(path: Path, data: bytes) -> bytes:
    """Decompressed ``data``; a truncated or corrupt stream is a :class:`CorpusFormatError` at the
    line where the readable text stops (not a bare EOFError / zlib.error)."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        try:  # what decompresses before the damage (zlib keeps a truncated stream's output)
            readable = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        except zlib.error:
            readable = b""
        line = readable.count(b"\n") + 1
        raise CorpusFormatError(path, line, Errors.E306.format(err_type=type(err).__name__, err=err)) from None


def _read_text(path: Path) -> str:
    """UTF-8, falling back to latin-1 (AskAPatient and old PubTator dumps are not always UTF-8);
    gzip (MedMentions ships ``corpus_pubtator.txt.gz``) is recognised by its magic bytes."""
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(path, data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _lines(path: Path) -> List[str]:
    # Split on '\n' only: str.splitlines() would also break on \x1c, \x85, \u2028 inside text.
    text = _read_text(path).replace("\r\n", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n") if text else []


# --------------------------------------------------------------------------- PubTator
_TITLE = re.compile(r"^([^|\t]+)\|([ta])\|(.*)$")


@dataclass
class PubTatorAnnotation:
    """One annotation line, checked against the text; ``end`` excludes trailing whitespace."""

    lineno: int
    start: int
    end: int
    surface: str  # column 4 as written
    type: str  # column 5 (Disease, Chemical, CompositeMention, ...)
    ids: str  # column 6 as written: ``|`` composite, ``+`` conjunct, ``-1`` not normalisable
    parts: Optional[str] = None  # column 7 when present (BC5CDR spells out composite parts)
    trimmed: bool = False  # the text span differed from the surface only by trailing whitespace


@dataclass
class PubTatorDocument:
    pmid: str
    title: str
    abstract: Optional[str] = None
    annotations: List[PubTatorAnnotation] = field(default_factory=list)

    @property
    def text(self) -> str:
        """``title + " " + abstract``: the string PubTator offsets index."""
        return self.title + " " + (self.abstract or "")


def read_pubtator_documents(path: PathLike) -> Iterator[PubTatorDocument]:
    """The one PubTator parser: documents (also those without annotations) with their annotation
    lines; relation lines are skipped. :func:`read_pubtator` and the DocBin converter of
    ``projects/angel`` both read through it. Raises :class:`CorpusFormatError` on malformed lines
    and offset/text mismatches."""
    path = Path(path)
    doc: Optional[PubTatorDocument] = None
    text: Optional[str] = None  # fixed by the document's first annotation
    for lineno, line in enumerate(_lines(path), start=1):
        if not line.strip():
            if doc is not None:
                yield doc
            doc = text = None
            continue
        m = _TITLE.match(line)
        if m and "\t" not in line.split("|", 1)[0]:
            pmid, kind, content = m.group(1).strip(), m.group(2), m.group(3)
            if kind == "t":
                if doc is not None and text is not None:
                    raise CorpusFormatError(path, lineno, Errors.E307.format(pmid=pmid))
                if doc is not None:
                    yield doc
                doc, text = PubTatorDocument(pmid, content), None
            else:
                if doc is None or doc.pmid != pmid:
                    raise CorpusFormatError(path, lineno, Errors.E308.format(pmid=pmid))
                if doc.abstract is not None or text is not None:
                    raise CorpusFormatError(path, lineno, Errors.E309.format(pmid=pmid))
                doc.abstract = content
            continue

        cols = line.split("\t")
        if len(cols) == 4 and not cols[1].strip().lstrip("-").isdigit():
            continue  # relation line, e.g. "PMID\tCID\tD008750\tD003866" (BC5CDR)
        if len(cols) not in (6, 7):
            raise CorpusFormatError(path, lineno, Errors.E310.format(n=len(cols), line=line[:80]))
        pmid, s_start, s_end, surface, etype, raw_ids = cols[:6]
        if doc is None or pmid.strip() != doc.pmid:
            raise CorpusFormatError(path, lineno, Errors.E311.format(pmid=pmid))
        try:
            start, end = int(s_start), int(s_end)
        except ValueError:
            raise CorpusFormatError(path, lineno, Errors.E312.format(start=s_start, end=s_end)) from None
        text = text if text is not None else doc.text
        if not 0 <= start < end <= len(text):
            raise CorpusFormatError(path, lineno, Errors.E313.format(start=start, end=end, length=len(text)))
        found = text[start:end]
        if found != surface and found.rstrip() != surface.rstrip():
            raise CorpusFormatError(path, lineno, Errors.E314.format(start=start, end=end, found=found, surface=surface))
        end = start + len(found.rstrip())  # a surface never ends in whitespace
        parts = cols[6] if len(cols) == 7 else None
        trimmed = found != surface
        doc.annotations.append(PubTatorAnnotation(lineno, start, end, surface, etype.strip(), raw_ids, parts, trimmed))
    if doc is not None:
        yield doc


def read_pubtator(path: PathLike, *, composite: str = "keep") -> MentionList:
    """Read a PubTator file (NCBI-disease, BC5CDR) into mentions with document context.

    ``composite``: ``"keep"`` one mention with all ids; ``"split"`` one bare mention per part
    when a 7th column spells the parts out (BC5CDR) and counts match, else keep; ``"drop"`` skip.
    Raises :class:`CorpusFormatError` on malformed lines and offset/text mismatches.
    """
    if composite not in ("keep", "split", "drop"):
        raise ValueError(Errors.E315.format(composite=composite))
    report = ReadReport(path=str(path), format="pubtator")
    out: List[Mention] = []
    conj: Set[Mention] = set()
    for doc in read_pubtator_documents(path):
        report.documents += 1
        full = doc.text
        for ann in doc.annotations:
            report.trailing_space_fixed += int(ann.trimmed)
            report.records += 1
            ids, is_composite, is_conjunct, bad = _parse_ids(ann.ids)
            if not ids:
                report.skipped_unnormalisable += 1
                continue
            if bad:
                report.partially_unnormalisable += 1
            if is_conjunct:
                report.conjunct += 1
            if is_composite:
                report.composite += 1
                if composite == "drop":
                    report.dropped_composite += 1
                    continue
                parts = [p.strip() for p in ann.parts.split("|")] if ann.parts is not None else []
                if composite == "split" and not is_conjunct and len(parts) == len(ids) > 1:
                    report.split += 1
                    out.extend(Mention.bare(p, (i,), doc_id=doc.pmid) for p, i in zip(parts, ids))
                    continue
            mention = Mention(doc.pmid, full, ann.start, ann.end, ids)
            out.append(mention)
            if is_conjunct:
                conj.add(mention)
    report.mentions = len(out)
    return MentionList(out, report, conj)


# --------------------------------------------------------------------------- BioSyn
def read_biosyn_dir(path: PathLike) -> MentionList:
    """Read BioSyn ``*.concept`` files (a directory, or one file) into bare mentions.

    The mentions there are already processed (lowercased, abbreviations expanded), so no context
    is kept; ``doc_id`` is the PMID. A resolved composite (``a|b||ID1|ID2``) becomes one mention
    per part when the counts match; otherwise one mention (parts joined by a space) with all ids.
    """
    path = Path(path)
    files = sorted(path.glob("*.concept")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise FileNotFoundError(Errors.E316.format(path=path))
    report = ReadReport(path=str(path), format="biosyn")
    out: List[Mention] = []
    conj: Set[Mention] = set()
    for file in files:
        seen_doc = False
        for lineno, line in enumerate(_lines(file), start=1):
            if not line.strip():
                continue
            fields = line.split("||")
            if len(fields) != 5:
                raise CorpusFormatError(file, lineno, Errors.E317.format(line=line[:80]))
            pmid, span, _etype, surface, raw_ids = (f.strip() for f in fields)
            if not re.fullmatch(r"\d+\|\d+", span) or not surface:
                raise CorpusFormatError(file, lineno, Errors.E318.format(line=line[:80]))
            seen_doc = True
            report.records += 1
            ids, is_composite, is_conjunct, bad = _parse_ids(raw_ids)
            if not ids:
                report.skipped_unnormalisable += 1
                continue
            if bad:
                report.partially_unnormalisable += 1
            parts = [p.strip() for p in surface.split("|") if p.strip()]
            id_fields = [f.strip() for f in raw_ids.split("|")]
            if is_composite or len(parts) > 1:
                report.composite += 1
            if len(parts) > 1 and len(parts) == len(id_fields):
                report.split += 1
                for part, field_ in zip(parts, id_fields):
                    part_ids, _, part_conj, _ = _parse_ids(field_)
                    if not part_ids:
                        continue
                    mention = Mention.bare(part, part_ids, doc_id=pmid)
                    out.append(mention)
                    if part_conj:
                        report.conjunct += 1
                        conj.add(mention)
                continue
            mention = Mention.bare(" ".join(parts), ids, doc_id=pmid)
            out.append(mention)
            if is_conjunct:
                report.conjunct += 1
                conj.add(mention)
        report.documents += int(seen_doc)
    report.mentions = len(out)
    return MentionList(out, report, conj)


# --------------------------------------------------------------------------- AskAPatient
def read_askapatient(path: PathLike) -> MentionList:
    """Read an AskAPatient fold (``conceptID<TAB>concept name<TAB>mention``) into bare mentions."""
    path = Path(path)
    report = ReadReport(path=str(path), format="askapatient")
    out: List[Mention] = []
    for lineno, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise CorpusFormatError(path, lineno, Errors.E319.format(n=len(cols)))
        raw_id, _name, surface = cols
        surface = surface.strip()
        if not surface or not raw_id.strip():
            raise CorpusFormatError(path, lineno, Errors.E320)
        report.records += 1
        ids, is_composite, _, _ = _parse_ids(raw_id)
        if not ids:
            report.skipped_unnormalisable += 1
            continue
        report.composite += int(is_composite)
        out.append(Mention.bare(surface, ids))
    report.documents = 1 if out else 0
    report.mentions = len(out)
    return MentionList(out, report)


# --------------------------------------------------------------------------- spaCy DocBin
def read_docbin(path: PathLike, nlp: Any = None) -> MentionList:
    """Read entities with ``kb_id_`` from a spaCy DocBin (entities without one are skipped).

    ``doc_id`` is ``doc.user_data["doc_id"]`` when stored, else ``"<file name>#<index>"``.
    """
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    path = Path(path)
    vocab = nlp.vocab if nlp is not None else Vocab()
    report = ReadReport(path=str(path), format="docbin")
    out: List[Mention] = []
    conj: Set[Mention] = set()
    for i, doc in enumerate(DocBin().from_disk(path).get_docs(vocab)):
        report.documents += 1
        doc_id = str(doc.user_data.get("doc_id", f"{path.name}#{i}"))
        for ent in doc.ents:
            report.records += 1
            if not ent.kb_id_.strip():
                report.skipped_no_kb_id += 1
                continue
            ids, is_composite, is_conjunct, bad = _parse_ids(ent.kb_id_)
            if not ids:
                report.skipped_unnormalisable += 1
                continue
            report.partially_unnormalisable += int(bool(bad))
            report.composite += int(is_composite)
            mention = Mention(doc_id, doc.text, ent.start_char, ent.end_char, ids)
            out.append(mention)
            if is_conjunct:
                report.conjunct += 1
                conj.add(mention)
    report.mentions = len(out)
    return MentionList(out, report, conj)


# --------------------------------------------------------------------------- dispatch
def _sniff(path: Path) -> str:
    """Guess the format from the first non-blank lines of a text file."""
    for line in _lines(path)[:50]:
        if not line.strip():
            continue
        if _TITLE.match(line) and "\t" not in line.split("|", 1)[0]:
            return "pubtator"
        if line.count("||") == 4:
            return "biosyn"
        if line.count("\t") == 2:
            return "askapatient"
        if line.count("\t") in (5, 6):
            return "pubtator"
    raise ValueError(Errors.E321.format(path=path))


def read_corpus(path: PathLike, format: str = "auto", **kwargs: Any) -> MentionList:
    """Read any supported corpus; ``format`` is auto, pubtator, biosyn, askapatient or docbin."""
    path = Path(path)
    readers: Dict[str, Callable[..., MentionList]] = {
        "pubtator": read_pubtator, "biosyn": read_biosyn_dir, "askapatient": read_askapatient, "docbin": read_docbin}
    if format == "auto":
        if path.is_dir():
            format = "biosyn"
        elif path.suffix == ".spacy":
            format = "docbin"
        elif path.suffix == ".concept":
            format = "biosyn"
        else:
            format = _sniff(path)
    if format not in readers:
        raise ValueError(Errors.E322.format(format=format, formats=sorted(readers)))
    return readers[format](path, **kwargs)


# --------------------------------------------------------------------------- context
def mention_context(m: Mention, window_words: int) -> Tuple[str, str, str]:
    """(left context, mention, right context), each context at most ``window_words`` words.

    Words are whitespace-separated and re-joined with single spaces; a bare mention has none.
    The linker's own rule (:func:`spacy_angel.seq2seq.prompt.split_context`), before normalisation.
    """
    if window_words < 0:
        raise ValueError(Errors.E323)
    return split_context(m.text, m.start, m.end, window_words)
