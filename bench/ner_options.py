"""Dev NER P/R/F1 of a trained spaCy NER alone and with rule-based span proposals merged in (issue 28).

Why: the end-to-end loss on NCBI-disease is mostly the NER's (test F1 76.4). Before a proposal source
becomes a pipeline setting it has to raise F1 on dev. Each option adds the spans it proposes where
they overlap no NER span (the NER's spans are kept as they are):

* ``kb_ruler``: every KB name of 4+ characters, matched case-insensitively (a ``span_ruler`` of the KB);
* ``train_ruler@R``: training-set mention surfaces (3+ characters) annotated at least a fraction R of
  the times they occur in the training texts (a surface that is usually not annotated, like "tumor"
  in "tumor suppressor", is left out);
* ``document_propagation``: every other occurrence, in the same document, of a text the NER tagged;
* ``abbreviation_rule``: every occurrence of a short form whose long form the NER tagged
  (Schwartz-Hearst definitions, :mod:`spacy_angel.pipeline.abbreviations`).

Spans are compared by exact character offsets, as ``projects/angel/scripts/e2e_score.py`` does.

Usage: python bench/ner_options.py NER_MODEL --corpus projects/angel/corpus/ncbi --kb KB_DIR --json OUT.json
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Set, Tuple

Offsets = Set[Tuple[int, int]]


def prf(gold: Sequence[Offsets], predicted: Sequence[Offsets]) -> Dict[str, float]:
    tp = sum(len(g & p) for g, p in zip(gold, predicted))
    n_pred, n_gold = sum(map(len, predicted)), sum(map(len, gold))
    p, r = (tp / n_pred if n_pred else 0.0), (tp / n_gold if n_gold else 0.0)
    return {"precision": round(100 * p, 2), "recall": round(100 * r, 2), "f1": round(200 * p * r / (p + r), 2) if p + r else 0.0}


def merged(doc, proposals: Iterable) -> Offsets:
    """The NER's spans plus the proposed spans that overlap none of them (longest first among proposals)."""
    from spacy.util import filter_spans

    ents = list(doc.ents)
    extra = [s for s in proposals if not any(s.start < e.end and e.start < s.end for e in ents)]
    return {(s.start_char, s.end_char) for s in filter_spans(ents + extra)}


def phrase_matcher(nlp, phrases: Iterable[str]):
    from spacy.matcher import PhraseMatcher

    matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
    matcher.add("PROPOSAL", list(nlp.tokenizer.pipe(sorted(set(phrases)))))
    return matcher


def annotation_rates(nlp, train_docs: Sequence) -> Dict[str, float]:
    """Per lowercased training surface: times annotated / times its text occurs in the training texts."""
    annotated = Counter(e.text.lower() for d in train_docs for e in d.ents)
    matcher = phrase_matcher(nlp, annotated)
    occurs: Counter = Counter()
    for doc in train_docs:
        for _, start, end in matcher(doc):
            occurs[doc[start:end].text.lower()] += 1
    return {t: annotated[t] / max(occurs[t], annotated[t]) for t in annotated}


def abbreviation_proposals(doc) -> List:
    from spacy_angel.pipeline.abbreviations import find_abbreviations

    out = []
    for short, long, _short_start, long_start in find_abbreviations(doc.text):
        long_end = long_start + len(long)
        if not any(e.start_char < long_end and long_start < e.end_char for e in doc.ents):
            continue
        for m in re.finditer(r"(?<!\w)" + re.escape(short) + r"(?!\w)", doc.text):
            span = doc.char_span(m.start(), m.end())
            if span is not None:
                out.append(span)
    return out


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ner", type=Path, help="trained spaCy pipeline with 'ner' (e.g. training/cpu/ner/model-best)")
    parser.add_argument("--corpus", type=Path, required=True, help="folder with train.spacy and the --split DocBin")
    parser.add_argument("--split", default="dev", help="the split scored (dev: choices are made there)")
    parser.add_argument("--kb", type=Path, required=True, help="KB directory of the kb_ruler option")
    parser.add_argument("--rates", default="0.5,0.7,0.9", help="annotation-rate thresholds of train_ruler")
    parser.add_argument("--json", type=Path, help="write the table here")
    args = parser.parse_args(argv)
    import spacy
    from spacy.tokens import DocBin

    from spacy_angel.kb.store import KnowledgeBase

    nlp = spacy.load(args.ner)
    gold_docs = list(DocBin().from_disk(args.corpus / f"{args.split}.spacy").get_docs(nlp.vocab))
    train_docs = list(DocBin().from_disk(args.corpus / "train.spacy").get_docs(nlp.vocab))
    docs = list(nlp.pipe(d.text for d in gold_docs))
    gold = [{(e.start_char, e.end_char) for e in d.ents} for d in gold_docs]
    rows: Dict[str, Dict[str, float]] = {"ner": prf(gold, [{(e.start_char, e.end_char) for e in d.ents} for d in docs])}

    kb = KnowledgeBase.from_disk(args.kb)
    kb_matcher = phrase_matcher(nlp, (n for n in kb.names if len(n) >= 4))
    rows["kb_ruler"] = prf(gold, [merged(d, [d[s:e] for _, s, e in kb_matcher(d)]) for d in docs])
    rates = annotation_rates(nlp, train_docs)
    for rate in (float(r) for r in args.rates.split(",")):
        matcher = phrase_matcher(nlp, (t for t, v in rates.items() if v >= rate and len(t) >= 3))
        rows[f"train_ruler@{rate}"] = prf(gold, [merged(d, [d[s:e] for _, s, e in matcher(d)]) for d in docs])
    propagated = []
    for d in docs:
        texts = {e.text.lower() for e in d.ents if len(e.text) >= 2}
        matcher = phrase_matcher(nlp, texts) if texts else None
        propagated.append(merged(d, [d[s:e] for _, s, e in matcher(d)] if matcher else []))
    rows["document_propagation"] = prf(gold, propagated)
    rows["abbreviation_rule"] = prf(gold, [merged(d, abbreviation_proposals(d)) for d in docs])

    report = {"command": "python bench/ner_options.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "split": args.split, "documents": len(gold_docs), "rows": rows}
    for name, row in rows.items():
        print(f"{name:24s} P {row['precision']:6.2f}  R {row['recall']:6.2f}  F1 {row['f1']:6.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
