"""Mention preprocessing: the normalisation the ANGEL/BioSyn training data went through.

Readers (:mod:`training.data.corpora`) turn files into mentions exactly as written; this module then
lowercases and expands abbreviations from each mention's own document (Schwartz-Hearst, as the
Ab3P step BioSyn applied) and can drop mentions none of whose ids is in the KB. Importable as
``training.data.corpora.preprocess`` as well.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Set, Tuple

from spacy_angel.types import Mention

if TYPE_CHECKING:  # pragma: no cover
    from training.data.corpora import MentionList


@dataclass
class PreprocessReport:
    """Counts from :func:`preprocess`; ``dropped`` maps reason -> number of mentions."""

    input: int = 0
    kept: int = 0
    lowercased: bool = True
    abbreviations_expanded: int = 0  # mentions whose surface changed by expansion
    ids_removed_not_in_kb: int = 0  # ids dropped from mentions that kept other ids
    dropped: Dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def preprocess(
    mentions: Sequence[Mention],
    *,
    lowercase: bool = True,
    expand_abbreviations: bool = True,
    kb: Any = None,
) -> Tuple[MentionList, PreprocessReport]:
    """Normalise mentions the way the ANGEL/BioSyn training data were normalised.

    Abbreviations are expanded in the mention using the definitions found in its own document
    (``Mention.text``); the context is kept (so offsets move with the expansion) and lowercased
    with it. With ``kb`` (anything supporting ``kb_id in kb``) mentions none of whose ids is in
    the KB are dropped and composite/conjunct mentions keep only the ids found there.
    """
    from spacy_angel.pipeline.abbreviations import expand_abbreviations as detect
    from spacy_angel.pipeline.abbreviations import expand_mention
    from training.data.corpora import MentionList, ReadReport  # here: training.data.corpora imports this module

    report = PreprocessReport(input=len(mentions), lowercased=lowercase)
    in_conj: Set[Mention] = getattr(mentions, "conjunct", set())
    cache: Dict[str, Dict[str, str]] = {}
    out: List[Mention] = []
    conj: Set[Mention] = set()

    def drop(reason: str) -> None:
        report.dropped[reason] = report.dropped.get(reason, 0) + 1

    for m in mentions:
        ids = tuple(m.gold_ids)
        if kb is not None:
            if not ids:
                drop("no_gold_id")
                continue
            kept_ids = tuple(i for i in ids if i in kb)
            if not kept_ids:
                drop("not_in_kb")
                continue
            report.ids_removed_not_in_kb += len(ids) - len(kept_ids)
            ids = kept_ids
        left, surface, right = m.text[: m.start], m.surface, m.text[m.end :]
        if expand_abbreviations:
            if m.text not in cache:
                cache[m.text] = detect(m.text)
            expanded = expand_mention(surface, cache[m.text])
            if expanded != surface:
                report.abbreviations_expanded += 1
                surface = expanded
        if lowercase:
            left, surface, right = left.lower(), surface.lower(), right.lower()
        new = Mention(m.doc_id, left + surface + right, len(left), len(left) + len(surface), ids)
        out.append(new)
        if m in in_conj:
            conj.add(new)
    report.kept = len(out)
    base = getattr(mentions, "report", None)
    return MentionList(out, base if isinstance(base, ReadReport) else None, conj), report
