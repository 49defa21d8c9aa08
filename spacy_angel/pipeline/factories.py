"""Every registration of the runtime, in one module (spaCy's ``registrations.py`` idea).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from spacy.language import Language
from spacy.util import registry

from spacy_angel.errors import Errors
from spacy_angel.kb.readers import load_kb
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.linking.linker import Retriever
from spacy_angel.pipeline.abbreviation_component import AbbreviationDetector
from spacy_angel.pipeline.linker_component import AngelLinkerComponent
from spacy_angel.pipeline.ner_vote import EntsToSpans, NerVote
from spacy_angel.pipeline.scoring import angel_linker_score
from spacy_angel.retrieval.ann_search import AnnSearchSettings
from spacy_angel.retrieval.tfidf import SEARCHES, NameIndex, load_or_build_index


@registry.scorers("spacy_angel.linker_scorer.v1")
def make_angel_linker_scorer() -> Callable[..., Dict[str, Any]]:
    """The default ``scorer`` of ``angel_linker`` (registered so a config can swap it, as in spaCy)."""
    return angel_linker_score


@registry.misc("spacy_angel.load_kb.v1")
def make_kb_loader() -> Callable[[Union[str, Path]], KnowledgeBase]:
    """The ``kb_loader`` of ``angel_linker``: a ``kb build`` directory or a KB file in any supported
    format (spaCy's registered ``load_kb`` idea; register another to read a KB kept elsewhere)."""
    return load_kb


@registry.misc("spacy_angel.tfidf_retriever.v1")
def make_tfidf_retriever() -> Retriever:
    """The ``retriever`` of ``angel_linker`` (hybrid and rerank modes): the char 3-gram TF-IDF index
    saved beside the KB, fitted and saved there when missing or stale (spaCy's
    ``spacy.CandidateGenerator.v1`` idea: a swappable part, not a mode string)."""
    return load_or_build_index


@registry.misc("spacy_angel.tfidf_retriever.v2")
def make_tfidf_retriever_v2(search: str = "exact", query_mass: float = 0.9, rescore_depth: int = 400,
                            rare_budget: int = 50_000, rare_depth: int = 2_000) -> Retriever:
    """v1 with a choice of search (:class:`spacy_angel.retrieval.tfidf.NameIndex`): ``"exact"``, ``"pruned"``
    (the query's heaviest 3-grams, then exact re-scoring) or ``"ann"`` (an HNSW graph plus the rarest
    3-grams, then exact re-scoring; the graph from ``kb build --ann``, built and saved on first use
    otherwise; needs the ``ann`` extra). Exact stays the default: it is what training and the published
    figures use. For KBs of millions of names use ``"ann"``: docs/performance.md's KB-scale table gives
    its speed and recall of exact. Pruned search was 1.2-1.4x exact up to 1M names and slower at 6M. The
    index arrays and the graph are memory-mapped, so ``n_process`` workers share them. ``rare_budget`` and
    ``rare_depth`` (ANN search, :class:`~spacy_angel.retrieval.ann_search.AnnSearchSettings`) trade speed for
    recall: at 6M names the defaults found 97.4% of the exact top-20 at 1,389-1,595 queries/s on 2 cores,
    ``rare_budget=300_000`` 99.0% at 396 (docs/results/ann_settings_6m_r18.json)."""
    if search not in SEARCHES:  # checked when the config is resolved, not at the first hybrid batch
        raise ValueError(Errors.E223.format(search=search, searches=SEARCHES, query_mass=query_mass,
                                            rescore_depth=rescore_depth))

    ann = AnnSearchSettings(rare_budget=rare_budget, rare_depth=rare_depth)  # E226 at resolution too

    def retrieve(kb: KnowledgeBase, index_dir: Optional[Union[str, Path]]) -> NameIndex:
        return load_or_build_index(kb, index_dir, search=search, query_mass=query_mass, rescore_depth=rescore_depth,
                                   ann=ann)

    return retrieve


@Language.factory(
    "angel_linker",
    assigns=["token.ent_kb_id", "span._.cui", "span._.cui_score", "span._.kb_name", "span._.candidates", "span._.kb_ents",
             "span._.cuis"],
    requires=["doc.ents"],
    default_score_weights={"nel_micro_f": 1.0, "nel_micro_r": None, "nel_micro_p": None},
    default_config={
        "model": None,
        "kb": None,
        "num_beams": 5,
        "top_k": 5,
        "spans_key": None,
        "context_window": None,
        "batch_size": 32,
        "device": "auto",
        "dtype": None,
        "threshold": 0.0,
        "lowercase": True,
        "expand_abbreviations": True,
        "mode": "hybrid",
        "num_candidates": 20,
        "fusion": None,
        "abbreviation_propagation": False,
        "one_sense_per_document": False,
        "split_composite": False,
        "scorer": {"@scorers": "spacy_angel.linker_scorer.v1"},
        "kb_loader": {"@misc": "spacy_angel.load_kb.v1"},
        "retriever": {"@misc": "spacy_angel.tfidf_retriever.v1"},
    },
)
def make_angel_linker(
    nlp: Language,
    name: str,
    model: Optional[str],
    kb: Optional[str],
    num_beams: int,
    top_k: int,
    spans_key: Optional[str],
    context_window: Optional[int],
    batch_size: int,
    device: str,
    dtype: Optional[str],
    threshold: float,
    lowercase: bool,
    expand_abbreviations: bool,
    mode: str,
    num_candidates: int,
    fusion: Optional[Dict[str, float]],
    abbreviation_propagation: bool,
    one_sense_per_document: bool,
    split_composite: bool,
    scorer: Optional[Callable[..., Dict[str, Any]]],
    kb_loader: Callable[..., Any],  # spacy_angel.load_kb.v1: (path) -> KnowledgeBase
    retriever: Callable[..., Any],  # spacy_angel.tfidf_retriever.v1: linking.linker.Retriever
) -> "AngelLinkerComponent":
    """Create the component. ``model``: a local directory or hub id; ``kb``: a KB directory or KB file.
    ``abbreviation_propagation``, ``one_sense_per_document``, ``split_composite``: document-level linking
    (:mod:`spacy_angel.pipeline.document_linking`), off by default."""
    return AngelLinkerComponent(
        nlp.vocab,
        name=name,
        model=model,
        kb=kb,
        num_beams=num_beams,
        top_k=top_k,
        spans_key=spans_key,
        context_window=context_window,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        threshold=threshold,
        lowercase=lowercase,
        expand_abbreviations=expand_abbreviations,
        mode=mode,
        num_candidates=num_candidates,
        fusion=fusion,
        abbreviation_propagation=abbreviation_propagation,
        one_sense_per_document=one_sense_per_document,
        split_composite=split_composite,
        scorer=scorer,
        kb_loader=kb_loader,
        retriever=retriever,
    )


@Language.factory(
    "angel_abbreviations",
    assigns=["doc._.abbreviations", "span._.long_form"],
    requires=["doc.ents"],
)
def make_abbreviation_detector(nlp: Language, name: str) -> AbbreviationDetector:
    """Factory for ``nlp.add_pipe("angel_abbreviations")`` (add it after "ner")."""
    return AbbreviationDetector(nlp, name)


@Language.factory("angel_ents_to_spans", assigns=["doc.spans", "doc.ents"], requires=["doc.ents"],
                  default_config={"spans_key": "ner"})
def make_ents_to_spans(nlp: Language, name: str, spans_key: str) -> EntsToSpans:
    """Factory for ``nlp.add_pipe("angel_ents_to_spans", config={"spans_key": ...})``, after each NER that
    ``angel_ner_vote`` votes over (:mod:`spacy_angel.pipeline.ner_vote`)."""
    return EntsToSpans(nlp, name, spans_key)


@Language.factory(
    "angel_ner_vote",
    assigns=["doc.ents"],
    requires=["doc.spans"],
    default_config={"spans_keys": ["ner"], "min_votes": 1, "scorer": {"@scorers": "spacy.ner_scorer.v1"}},
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_ner_vote(nlp: Language, name: str, spans_keys: List[str], min_votes: int,
                  scorer: Optional[Callable[..., Dict[str, Any]]]) -> NerVote:
    """Factory for ``nlp.add_pipe("angel_ner_vote", config={"spans_keys": [...], "min_votes": k})``: the
    entities at least ``min_votes`` of the NER span groups agree on; scored like spaCy's ``ner``."""
    return NerVote(nlp, name, spans_keys, min_votes, scorer=scorer)
