"""Convert a PubTator corpus (NCBI-disease, BC5CDR, MedMentions) into a spaCy DocBin.

Why: spaCy's NER trains on DocBins, and the end-to-end scorer compares a pipeline's entities
with these gold entities. Each entity keeps its gold id field in ``kb_id_`` (``|`` composite,
``+`` conjunct, exactly as in the corpus), so ``training.data.corpora.read_docbin`` reads the same
mentions back for linking; ``doc.user_data["doc_id"]`` holds the PMID.

Parsing is ``training.data.corpora.read_pubtator_documents``, the same parser the linker's corpus
reader uses. Choices: offsets index ``title + " " + abstract`` (PubTator convention). A span that does not
fall on token boundaries is first shrunk (``contract``) then grown (``expand``) to tokens;
overlapping spans keep the longest (:func:`spacy.util.filter_spans`). Counts of both are
printed. ``--pmids`` keeps only the listed documents (MedMentions ships one corpus file plus
PMID lists per split); ``--types`` keeps some entity types (BC5CDR: ``Disease``);
``--label`` gives every entity one label (default: the corpus type column).

Usage: python scripts/pubtator_to_docbin.py CORPUS.txt[.gz] OUT.spacy [--types Disease]
       [--label Disease] [--pmids PMIDS.txt] [--lang en]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Set, Tuple

from spacy_angel.fileio import atomic_write_bytes
from spacy_angel.errors import CorpusFormatError
from training.data.corpora import PubTatorDocument, read_pubtator_documents

#: A malformed PubTator line (file and line in the message); the parser is ``training.data.corpora``'s.
PubTatorError = CorpusFormatError


def _id_field(raw: str) -> str:
    """The corpus id field without stray spaces around ``|`` / ``+`` (``kb_id_`` keeps the rest)."""
    return re.sub(r"\s*([|+])\s*", r"\1", raw.strip())


@dataclass
class ConversionReport:
    documents: int = 0
    annotations: int = 0
    entities: int = 0
    realigned: int = 0
    unalignable: int = 0
    overlapping_dropped: int = 0
    filtered_type: int = 0

    def to_dict(self) -> Dict[str, int]:
        return dict(self.__dict__)


def to_docs(
    documents: Iterable[PubTatorDocument], nlp, types: Optional[Set[str]] = None, label: Optional[str] = None
) -> Tuple[list, ConversionReport]:
    """spaCy Docs with gold entities (label, ``kb_id_`` = the id field) and a count report."""
    from spacy.util import filter_spans

    report = ConversionReport()
    docs = []
    for pdoc in documents:
        doc = nlp.make_doc(pdoc.text)
        doc.user_data["doc_id"] = pdoc.pmid
        spans = []
        for ann in pdoc.annotations:
            report.annotations += 1
            if types is not None and ann.type not in types:
                report.filtered_type += 1
                continue
            ent_label, ids = label or ann.type or "ENTITY", _id_field(ann.ids)
            span = doc.char_span(ann.start, ann.end, label=ent_label, kb_id=ids)
            if span is None:
                span = doc.char_span(ann.start, ann.end, label=ent_label, kb_id=ids, alignment_mode="contract")
                if span is None or not len(span):
                    span = doc.char_span(ann.start, ann.end, label=ent_label, kb_id=ids, alignment_mode="expand")
                if span is None or not len(span):
                    report.unalignable += 1
                    continue
                report.realigned += 1
            spans.append(span)
        unique = {(s.start, s.end, s.label_, s.kb_id_): s for s in spans}
        kept = filter_spans(list(unique.values()))
        report.overlapping_dropped += len(unique) - len(kept)
        doc.ents = kept
        report.entities += len(kept)
        report.documents += 1
        docs.append(doc)
    return docs, report


def read_pmids(path: Path) -> Set[str]:
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def convert(
    input_path: Path,
    output_path: Path,
    *,
    types: Optional[Set[str]] = None,
    label: Optional[str] = None,
    pmids: Optional[Set[str]] = None,
    lang: str = "en",
) -> ConversionReport:
    """Read ``input_path``, write ``output_path`` (DocBin, atomically), return the counts."""
    import spacy
    from spacy.tokens import DocBin

    documents = [d for d in read_pubtator_documents(input_path) if pmids is None or d.pmid in pmids]
    docs, report = to_docs(documents, spacy.blank(lang), types=types, label=label)
    atomic_write_bytes(output_path, DocBin(docs=docs, store_user_data=True).to_bytes())
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="PubTator file (.txt or .gz)")
    parser.add_argument("output", type=Path, help="DocBin to write (.spacy)")
    parser.add_argument("--types", help="comma-separated entity types to keep (default: all)")
    parser.add_argument("--label", help="one label for every entity (default: the type column)")
    parser.add_argument("--pmids", type=Path, help="file with the PMIDs to keep, one per line")
    parser.add_argument("--lang", default="en", help="spaCy language of the tokenizer (default en)")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        print(f"error: {args.input} does not exist", file=sys.stderr)
        return 1
    try:
        report = convert(
            args.input,
            args.output,
            types={t.strip() for t in args.types.split(",")} if args.types else None,
            label=args.label,
            pmids=read_pmids(args.pmids) if args.pmids else None,
            lang=args.lang,
        )
    except PubTatorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.output}: {json.dumps(report.to_dict())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
