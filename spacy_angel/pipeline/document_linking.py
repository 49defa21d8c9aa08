"""Document-level linking for ``angel_linker``: abbreviation propagation, one sense per document,
composite mentions. Three config switches, all off by default; with all three off a span is
linked alone, exactly as before they existed.

The component's work is split like spaCy's EntityLinker, into steps that each see one thing:

1. :func:`plan_document` (before the model, from the text): what is linked in each span's place:
   the span (or, with ``expand_abbreviations``, its long form), the conjuncts of a composite span
   (``split_composite``), or nothing, because the span takes another span's links
   (``abbreviation_propagation``);
2. ``predict`` links every planned surface in one batch; :func:`collect_predictions` regroups the
   results per span (:class:`SpanPrediction`);
3. :func:`decide_document` (in ``set_annotations``): each span's concept ids, the vote of
   ``one_sense_per_document``, then the copies of ``abbreviation_propagation``
   (:class:`SpanDecision`, which ``set_annotations`` writes onto the span).

``abbreviation_propagation``: the definitions of a document ("hereditary nonpolyposis colorectal
cancer (HNPCC)") are found in its text with the Schwartz-Hearst algorithm of
:mod:`spacy_angel.pipeline.abbreviations` (so ``angel_abbreviations`` need not run; the first
definition of a short form wins, as in ``expand_abbreviations``). Every entity span from the
definition on whose text is the short form takes the links of the long form's entity span (the span
overlapping the long form most): same ids, same candidates. Where no entity span covers the long
form, the short-form spans are linked as the long form written in their place. Spans of the short
form before its definition are linked as usual. ``expand_abbreviations`` differs: it rewrites each
span on its own (also before the definition) and needs ``angel_abbreviations``; both can be on.

``one_sense_per_document``: spans whose normalised text (:func:`spacy_angel.kb.normalize.normalize_name`,
lowercased) is the same in one document get one concept, chosen by a vote over their candidates:
each concept scores the sum of its probabilities (``exp`` of the candidate score, 0 where a mention
did not list it) over the mentions, and the highest sum wins (ties: the concept the earliest mention
ranks higher). Each mention's ``cui_score`` becomes the winner's mean probability over the mentions,
and ``threshold`` applies to it; ``span._.candidates`` stay the mention's own ranking. Composite
spans and spans that take another span's links do not vote. With ``context_window = 0`` and
``lowercase`` (the defaults) mentions of one text get identical model inputs, so the vote changes
nothing; it matters where context or case makes their candidates differ.

``split_composite``: a composite span ("breast and ovarian cancer") is split into its conjuncts by
:func:`spacy_angel.pipeline.composite.split_composite` (a span whose text is a KB name is kept
whole); each conjunct is linked in the span's place, and the span gets every conjunct's best
concept that reaches ``threshold``, in conjunct order, duplicates dropped. spaCy's ``kb_id_`` holds
one string, so it is the ids joined by ``|`` (the NCBI-disease / BioSyn convention for composite
mentions, which the corpus readers and the component's scorer read as a set); ``span._.cui`` is the
first id and ``span._.cuis`` all of them. ``cui_score`` is the weakest kept conjunct's probability
and ``span._.candidates`` the conjuncts' candidates merged (each id once, at its best probability).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from spacy_angel.kb.normalize import normalize_name
from spacy_angel.pipeline.abbreviations import find_abbreviations
from spacy_angel.pipeline.composite import split_composite
from spacy_angel.types import Candidate

Ranked = List[Tuple[str, str, float]]  # (concept id, name, probability), best first: span._.candidates


@dataclass(frozen=True)
class SpanPlan:
    """What is linked in one span's place, decided from the text before the model runs."""

    surfaces: Tuple[str, ...]  # the span's surface (its text or long form), its conjuncts, or () when it copies
    source: Optional[int] = None  # the span (index among the doc's spans) whose links it takes


@dataclass
class SpanPrediction:
    """``predict``'s result for one span."""

    candidates: List[Candidate] = field(default_factory=list)  # the span's ranked candidates
    parts: Tuple[List[Candidate], ...] = ()  # each conjunct's, for a split composite span
    source: Optional[int] = None  # the span it takes its links from (abbreviation propagation)


@dataclass
class SpanDecision:
    """What ``set_annotations`` writes on one span."""

    ranked: Ranked  # span._.candidates
    ids: Tuple[str, ...]  # the span's concepts; () for NIL
    name: Optional[str] = None  # span._.kb_name (of the first id)
    score: Optional[float] = None  # span._.cui_score


# ---------------------------------------------------------------------------- 1. plan
def plan_document(
    text: str,
    spans: Sequence,
    surfaces: Sequence[str],
    *,
    propagate: bool = False,
    split: bool = False,
    is_name: Optional[Callable[[str], bool]] = None,
) -> List[SpanPlan]:
    """One :class:`SpanPlan` per span (``spans``: objects with ``start_char``, ``end_char``, ``text``;
    ``surfaces``: what each span is linked as on its own)."""
    plans = [SpanPlan((surface,)) for surface in surfaces]
    if split:
        for i, surface in enumerate(surfaces):
            conjuncts = split_composite(surface, is_name)
            if len(conjuncts) > 1:
                plans[i] = SpanPlan(conjuncts)
    if propagate:
        _propagate(text, spans, plans)
    return plans


def first_definitions(text: str) -> List[Tuple[str, str, int, int]]:
    """(short form, long form, short form's start, long form's start), the first definition of each
    short form (as :func:`spacy_angel.pipeline.abbreviations.expand_abbreviations` keeps)."""
    seen: Dict[str, Tuple[str, str, int, int]] = {}
    for definition in find_abbreviations(text):
        seen.setdefault(definition[0], definition)
    return list(seen.values())


def _propagate(text: str, spans: Sequence, plans: List[SpanPlan]) -> None:
    definitions = first_definitions(text)
    targets: Dict[int, int] = {}  # span -> definition, for spans of a short form from its definition on
    for d, (short, _, short_start, _) in enumerate(definitions):
        for j, span in enumerate(spans):
            if j not in targets and span.start_char >= short_start and span.text.strip() == short:
                targets[j] = d
    sources = [_long_form_span(spans, start, start + len(long), exclude=targets) for _, long, _, start in definitions]
    for j, d in targets.items():
        source = sources[d]
        plans[j] = SpanPlan((), source) if source is not None else SpanPlan((definitions[d][1],))


def _long_form_span(spans: Sequence, start: int, end: int, exclude: Dict[int, int]) -> Optional[int]:
    """The span overlapping ``[start, end)`` most (the first of equals), or None."""
    best, best_overlap = None, 0
    for j, span in enumerate(spans):
        overlap = min(end, span.end_char) - max(start, span.start_char)
        if j not in exclude and overlap > best_overlap:
            best, best_overlap = j, overlap
    return best


# ---------------------------------------------------------------------------- 2. regroup
def collect_predictions(plans: Sequence[Sequence[SpanPlan]], flat: Sequence[List[Candidate]]) -> List[List[SpanPrediction]]:
    """``flat`` (the linker's results for every planned surface, in plan order) regrouped per doc and span."""
    out: List[List[SpanPrediction]] = []
    pos = 0
    for doc_plans in plans:
        doc_out = []
        for plan in doc_plans:
            results = list(flat[pos : pos + len(plan.surfaces)])
            pos += len(plan.surfaces)
            if len(results) > 1:
                doc_out.append(SpanPrediction([], tuple(results), plan.source))
            else:
                doc_out.append(SpanPrediction(results[0] if results else [], (), plan.source))
        out.append(doc_out)
    return out


def as_predictions(doc_predictions: Sequence[Union[SpanPrediction, List[Candidate]]]) -> List[SpanPrediction]:
    """Per-span results; a plain candidate list (what ``predict`` returned before) is one span's candidates."""
    return [p if isinstance(p, SpanPrediction) else SpanPrediction(list(p)) for p in doc_predictions]


# ---------------------------------------------------------------------------- 3. decide
def decide_document(
    predictions: Sequence[SpanPrediction],
    texts: Sequence[str],
    *,
    threshold: float,
    name_of: Callable[[Candidate], str],
    one_sense: bool = False,
) -> List[SpanDecision]:
    """Each span's :class:`SpanDecision`: its own, then the vote (``one_sense``), then the copies."""
    decisions: List[Optional[SpanDecision]] = [
        None if p.source is not None else _decide_span(p, threshold, name_of) for p in predictions
    ]
    if one_sense:
        vote_one_sense(predictions, decisions, texts, threshold)
    for i, p in enumerate(predictions):
        if p.source is not None:
            source = decisions[p.source]
            decisions[i] = replace(source, ranked=list(source.ranked)) if source is not None else SpanDecision([], ())
    return decisions  # type: ignore[return-value]


def _ranked(candidates: Sequence[Candidate], name_of: Callable[[Candidate], str]) -> Ranked:
    return [(c.kb_ids[0], name_of(c), math.exp(c.score)) for c in candidates]


def _decide_span(p: SpanPrediction, threshold: float, name_of: Callable[[Candidate], str]) -> SpanDecision:
    if p.parts:
        return _decide_composite([_ranked(part, name_of) for part in p.parts], threshold)
    ranked = _ranked(p.candidates, name_of)
    if ranked and ranked[0][2] >= threshold:
        return SpanDecision(ranked, (ranked[0][0],), ranked[0][1], ranked[0][2])
    return SpanDecision(ranked, (), None, ranked[0][2] if ranked else None)


def _decide_composite(parts: Sequence[Ranked], threshold: float) -> SpanDecision:
    """Every conjunct's best concept reaching ``threshold``; the weakest kept one's probability."""
    bests = [ranked[0] for ranked in parts if ranked]
    kept = [best for best in bests if best[2] >= threshold]
    ids = tuple(dict.fromkeys(kb_id for kb_id, _, _ in kept))
    merged: Dict[str, Tuple[str, str, float]] = {}
    for ranked in parts:
        for item in ranked:
            if item[0] not in merged or item[2] > merged[item[0]][2]:
                merged[item[0]] = item
    ranked_all = sorted(merged.values(), key=lambda item: -item[2])
    if not kept:
        return SpanDecision(ranked_all, (), None, max(b[2] for b in bests) if bests else None)
    return SpanDecision(ranked_all, ids, kept[0][1], min(b[2] for b in kept))


def vote_one_sense(
    predictions: Sequence[SpanPrediction], decisions: List[Optional[SpanDecision]], texts: Sequence[str], threshold: float
) -> None:
    """One concept per normalised span text: the highest sum of probabilities over the mentions
    (module docstring). Changes ``decisions`` in place; groups of one mention are left alone."""
    groups: Dict[str, List[int]] = {}
    for i, (p, d) in enumerate(zip(predictions, decisions)):
        if p.source is None and not p.parts and d is not None and d.ranked:
            groups.setdefault(normalize_name(texts[i]), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        totals: Dict[str, float] = {}
        names: Dict[str, str] = {}
        for i in members:
            for kb_id, name, probability in decisions[i].ranked:  # type: ignore[union-attr]
                totals[kb_id] = totals.get(kb_id, 0.0) + probability
                names.setdefault(kb_id, name)
        winner = max(totals, key=totals.__getitem__)  # the first of equals: the earliest mention's ranking
        mean = totals[winner] / len(members)
        for i in members:
            linked = mean >= threshold
            decisions[i] = replace(
                decisions[i], ids=(winner,) if linked else (), name=names[winner] if linked else None, score=mean  # type: ignore[arg-type]
            )
