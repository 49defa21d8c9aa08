"""The ``angel_linker`` spaCy component: entity spans -> KB concept ids with the generative linker.

Shaped like spaCy's own pipes (``spacy/pipeline/entity_linker.py``): a typed factory,
``predict`` apart from ``set_annotations``, and ``to_disk`` / ``from_disk`` serializer dicts, so
``nlp.to_disk()`` then ``spacy.load()`` restores model, tokenizer, KB and trie. The model is
loaded lazily: ``spacy.load`` calls the factory with the saved config (whose paths may not
exist on the loading machine) and then ``from_disk`` supplies the real files.
"""
from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import ensure_path, from_disk, minibatch, to_disk

from spacy_angel.errors import Errors, LinkerError
from spacy_angel.fileio import atomic_write_json
from spacy_angel.kb.readers import load_kb
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.linking.fusion import FusionWeights
from spacy_angel.linking.linker import AngelLinker, Retriever
from spacy_angel.pipeline.config_checks import validate_config
from spacy_angel.pipeline.document_linking import (
    SpanPlan,
    SpanPrediction,
    as_predictions,
    collect_predictions,
    decide_document,
    plan_document,
)
from spacy_angel.pipeline.fork_safety import install_fork_hooks
from spacy_angel.pipeline.scoring import angel_linker_score
from spacy_angel.retrieval.name_encoder import ENCODER_DIR, NameEncoder, load_name_encoder
from spacy_angel.seq2seq.loading import load_model_and_tokenizer, save_pretrained_atomic
from spacy_angel.trie.kb_trie import load_or_build_trie
from spacy_angel.trie.token_trie import TokenTrie
from spacy_angel.types import NIL, Candidate, Mention

EXTENSIONS = ("cui", "cui_score", "kb_name", "candidates", "kb_ents", "cuis")






def install_extensions() -> None:
    """Register the span extensions once (idempotent, like spacy-transformers)."""
    for name in EXTENSIONS:
        if not Span.has_extension(name):
            Span.set_extension(name, default=None)


class AngelLinkerComponent:
    """Sets ``kb_id_`` and ``span._.cui``, ``cuis``, ``cui_score``, ``kb_name``, ``candidates``, ``kb_ents`` on entity spans.

    ``kb_id_`` is what spaCy itself reads (``Scorer.score_links``, displaCy, ``spacy evaluate``):
    the best concept id, or ``"NIL"`` for a span left unlinked, as spaCy's EntityLinker writes it.

    Scores are probabilities: ``exp`` of the length-normalised log-likelihood of the KB name
    (the geometric-mean token probability, in (0, 1]). A span whose best score is below
    ``threshold`` gets ``cui = None`` (NIL) but keeps its candidates. With
    ``expand_abbreviations`` and ``angel_abbreviations`` earlier in the pipeline, an abbreviated
    span is linked as its long form (written in place of the abbreviation in the model input),
    the preprocessing the published models were trained and evaluated with.

    Document-level switches (off by default; :mod:`spacy_angel.pipeline.document_linking`):
    ``abbreviation_propagation`` (a short form defined once in a document takes the links of its
    long form's span wherever it occurs later), ``one_sense_per_document`` (one concept per span
    text per document, by a vote over the mentions' candidate scores) and ``split_composite``
    ("breast and ovarian cancer" linked as its conjuncts: ``kb_id_`` is ``"ID1|ID2"``,
    ``span._.cui`` the first id, ``span._.cuis`` all of them; a span with one concept has
    ``cuis == (cui,)``, a NIL span ``()``).
    """

    def __init__(
        self,
        vocab,
        name: str = "angel_linker",
        *,
        model: Optional[str] = None,
        kb: Optional[Union[str, KnowledgeBase]] = None,
        num_beams: int = 5,
        top_k: int = 5,
        spans_key: Optional[str] = None,
        context_window: Optional[int] = None,
        batch_size: int = 32,
        device: str = "auto",
        dtype: Optional[str] = None,
        threshold: float = 0.0,
        lowercase: bool = True,
        expand_abbreviations: bool = True,
        mode: str = "hybrid",
        num_candidates: int = 20,
        fusion: Optional[Dict[str, float]] = None,
        abbreviation_propagation: bool = False,
        one_sense_per_document: bool = False,
        split_composite: bool = False,
        scorer: Optional[Callable[..., Dict[str, Any]]] = angel_linker_score,
        kb_loader: Callable[[Union[str, Path]], KnowledgeBase] = load_kb,
        retriever: Optional[Retriever] = None,
    ) -> None:
        install_extensions()
        install_fork_hooks()  # nlp.pipe(n_process=N) forks: see spacy_angel.pipeline.fork_safety
        self.vocab = vocab
        self.name = name
        self.cfg = {
            "model": model,
            "kb": kb if not isinstance(kb, KnowledgeBase) else None,
            "num_beams": num_beams,
            "top_k": top_k,
            "spans_key": spans_key,
            "context_window": context_window,
            "batch_size": batch_size,
            "device": device,
            "dtype": dtype,
            "threshold": threshold,
            "lowercase": lowercase,
            "expand_abbreviations": expand_abbreviations,
            "mode": mode,
            "num_candidates": num_candidates,
            "fusion": dict(fusion) if fusion is not None else None,
            "abbreviation_propagation": abbreviation_propagation,
            "one_sense_per_document": one_sense_per_document,
            "split_composite": split_composite,
        }
        validate_config(self.cfg)
        self.scorer = scorer
        self.kb_loader = kb_loader
        self.retriever = retriever
        self._kb_object = kb if isinstance(kb, KnowledgeBase) else None
        self._linker: Optional[AngelLinker] = None

    # -------------------------------------------------------------- loading
    @property
    def linker(self) -> AngelLinker:
        """The linker, loaded on first use from the configured model and KB."""
        if self._linker is None:
            self._linker = self._load(self.cfg["model"], self._kb_object if self._kb_object is not None else self.cfg["kb"])
        return self._linker

    def _load(self, model_path: Optional[Union[str, Path]], kb: Optional[Union[str, Path, KnowledgeBase]],
              fusion_file: Optional[Union[str, Path]] = None) -> AngelLinker:
        if model_path is None:
            raise ValueError(Errors.E102.format(name=self.name))
        kb_dir = Path(kb) if not isinstance(kb, KnowledgeBase) and kb is not None and Path(kb).is_dir() else None
        kb = kb if isinstance(kb, KnowledgeBase) else self._load_kb(kb, self.name, self.kb_loader)
        model, tokenizer = load_model_and_tokenizer(str(model_path), self.cfg["device"], self.cfg["dtype"])
        trie = load_or_build_trie(kb, tokenizer, None)
        if fusion_file is not None:  # an explicit file wins over the model's fusion.json
            fusion = FusionWeights.from_file(fusion_file)
        else:
            fusion = FusionWeights.for_model(model_path) if Path(str(model_path)).is_dir() else FusionWeights()
        return self._make_linker(model, tokenizer, kb, trie, fusion=fusion, index_dir=kb_dir,
                                 name_encoder=load_name_encoder(model_path))

    @staticmethod
    def _load_kb(kb: Optional[Union[str, Path]], name: str = "angel_linker",
                 kb_loader: Callable[[Union[str, Path]], KnowledgeBase] = load_kb) -> KnowledgeBase:
        if kb is None:
            raise ValueError(Errors.E103.format(name=name))
        if not Path(kb).exists():
            raise ValueError(Errors.E104.format(path=kb))
        return kb_loader(kb)

    def initialize(
        self,
        get_examples: Optional[Callable[[], Iterable[Example]]] = None,
        *,
        nlp: Optional[Language] = None,
        model: Optional[Union[str, Path]] = None,
        kb: Optional[Union[str, Path, KnowledgeBase]] = None,
        fusion: Optional[Union[str, Path]] = None,
    ) -> None:
        """Load the model and KB now, without writing their paths into the pipeline's config.

        Why: factory settings end up in ``config.cfg``, so ``config={"model": "/abs/path"}`` ships
        that path inside a ``spacy package``. ``initialize(model=..., kb=...)`` (or an
        ``[initialize.components.angel_linker]`` block, which ``nlp.initialize()`` passes here)
        loads the same files while the config keeps ``model = null``; ``nlp.to_disk`` then saves
        the files themselves. Nothing is trained: ``get_examples`` is accepted and not used.

        ``fusion``: a fusion weights file (``spacy-angel train fuse --output FILE``) used instead of
        the model's ``fusion.json``; a ``fusion`` config setting still comes first. ``to_disk``
        saves the weights in the pipeline's own folder, so the file is not needed after it.
        """
        if model is None and kb is None and fusion is None and self._linker is not None:
            return  # already loaded (from_disk, or an earlier call): nlp.initialize() keeps it
        self._linker = self._load(
            model if model is not None else self.cfg["model"],
            kb if kb is not None else (self._kb_object if self._kb_object is not None else self.cfg["kb"]),
            fusion_file=fusion,
        )
        self._kb_object = self._linker.kb

    def _make_linker(
        self,
        model,
        tokenizer,
        kb: KnowledgeBase,
        trie: TokenTrie,
        fusion: Optional[FusionWeights] = None,
        index_dir: Optional[Path] = None,
        name_encoder: Optional[NameEncoder] = None,
    ) -> AngelLinker:
        """The linker; fusion weights from the config when set there, else the model's (or the defaults)."""
        if self.cfg["fusion"] is not None:
            fusion = FusionWeights.from_dict(self.cfg["fusion"], origin="angel_linker: config setting 'fusion'")
        return AngelLinker(
            model,
            tokenizer,
            kb,
            trie,
            num_beams=self.cfg["num_beams"],
            context_window=self.cfg["context_window"],
            batch_size=self.cfg["batch_size"],
            lowercase=self.cfg["lowercase"],
            mode=self.cfg["mode"],
            num_candidates=self.cfg["num_candidates"],
            fusion=fusion,
            index_dir=index_dir,  # the TF-IDF index is loaded (or fitted) when hybrid / rerank first needs it
            retriever=self.retriever,
            name_encoder=name_encoder,  # the model's dense name encoder (MODEL/name_encoder), if it has one
        )

    # -------------------------------------------------------------- processing
    def spans(self, doc: Doc) -> Sequence[Span]:
        key = self.cfg["spans_key"]
        if key is None:
            return doc.ents
        return doc.spans[key] if key in doc.spans else []

    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc], self.predict([doc]))
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Link the mentions of many documents per decoder batch."""
        for docs in minibatch(stream, size=batch_size):
            self.set_annotations(docs, self.predict(docs))
            yield from docs

    def predict(self, docs: Sequence[Doc]) -> List[List[SpanPrediction]]:
        """Candidates for every span of every doc (no side effects): what each span is linked as is
        planned from the text first (its long form, its conjuncts, or another span's links:
        :func:`~spacy_angel.pipeline.document_linking.plan_document`), then all are linked in one batch."""
        mentions: List[Mention] = []
        plans = []
        for i, doc in enumerate(docs):
            spans = self.spans(doc)
            doc_plans = self._plans(doc, spans)
            plans.append(doc_plans)
            for span, plan in zip(spans, doc_plans):
                mentions.extend(self._mention(span, i, surface) for surface in plan.surfaces)
        flat = self.linker.link(mentions, top_k=self.cfg["top_k"]) if mentions else []
        return collect_predictions(plans, flat)

    def _plans(self, doc: Doc, spans: Sequence[Span]) -> List[SpanPlan]:
        cfg = self.cfg
        is_name = (lambda text: self.linker.kb.name_index(text) is not None) if cfg["split_composite"] else None
        return plan_document(doc.text, spans, [self._surface(span) for span in spans], is_name=is_name,
                             propagate=cfg["abbreviation_propagation"], split=cfg["split_composite"])

    def _surface(self, span: Span) -> str:
        """What the span is linked as on its own: its text, or its long form when known."""
        # angel_abbreviations installs doc._.abbreviations and span._.long_form together.
        if self.cfg["expand_abbreviations"] and Doc.has_extension("abbreviations") and span.doc._.abbreviations:
            long_form = span._.long_form
            if long_form:
                return long_form
        return span.text

    def _mention(self, span: Span, doc_index: int, surface: Optional[str] = None) -> Mention:
        """The span in its document; ``surface`` (default: its long form when known) written in its place."""
        doc = span.doc
        start, end = span.start_char, span.end_char
        surface = self._surface(span) if surface is None else surface
        if surface != span.text:
            text = doc.text[:start] + surface + doc.text[end:]
            return Mention(str(doc_index), text, start, start + len(surface))
        return Mention(str(doc_index), doc.text, start, end)

    def set_annotations(self, docs: Sequence[Doc], predictions: Sequence[Sequence[Union[SpanPrediction, List[Candidate]]]]) -> None:
        """Write ``kb_id_`` (the concept id, ids joined by ``|`` for a composite span, or ``NIL``) and
        the ``span._`` extensions; document-level decisions are taken here (:func:`decide_document`)."""
        kb = self.linker.kb
        key = self.cfg["spans_key"]
        for doc, doc_predictions in zip(docs, predictions):
            spans = self.spans(doc)
            decisions = decide_document(
                as_predictions(doc_predictions), [span.text for span in spans], threshold=self.cfg["threshold"],
                name_of=lambda c: kb.preferred_name(c.kb_ids[0]) or c.name, one_sense=self.cfg["one_sense_per_document"],
            )
            for i, (span, decision) in enumerate(zip(spans, decisions)):
                span._.candidates = decision.ranked
                span._.kb_ents = [(kb_id, score) for kb_id, _, score in decision.ranked]
                span._.cui = decision.ids[0] if decision.ids else None
                span._.cuis = decision.ids
                span._.kb_name, span._.cui_score = decision.name, decision.score
                kb_id = "|".join(decision.ids) if decision.ids else NIL
                # A Span is a view: setting span.kb_id_ on an item of doc.ents or of a span group
                # changes a temporary copy only. doc.ents are built from the tokens, so (like
                # spaCy's EntityLinker) the id goes on every token; a span group item is replaced.
                if key is None:
                    for token in span:
                        token.ent_kb_id_ = kb_id
                else:
                    doc.spans[key][i] = Span(doc, span.start, span.end, label=span.label, kb_id=kb_id, span_id=span.id)

    def score(self, examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
        """``nel_micro_p/r/f`` with spaCy's ``Scorer.score_links`` (what ``spacy evaluate`` prints)."""
        if self.scorer is None:
            return {}
        if self.cfg["spans_key"] is not None:
            kwargs.setdefault("spans_key", self.cfg["spans_key"])
        return self.scorer(examples, **kwargs)

    # -------------------------------------------------------------- serialization
    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        """Write cfg, model + tokenizer (safetensors), KB, trie, fusion weights (and the TF-IDF index) into ``path``."""
        linker = self.linker
        serialize = {
            "cfg": lambda p: _write_json(p, {k: v for k, v in self.cfg.items() if k not in ("model", "kb")}),
            "model": lambda p: save_pretrained_atomic(linker.model, linker.tokenizer, p),
            "kb": lambda p: linker.kb.to_disk(p),
            "trie": lambda p: linker.trie.to_disk(p),
            "fusion": lambda p: _write_json(p, linker.fusion.to_dict()),
        }
        if self.cfg["mode"] != "beam":
            serialize["index"] = lambda p: linker.name_index.to_disk(p)
        if linker.name_encoder is not None:
            serialize[ENCODER_DIR] = lambda p: linker.name_encoder.to_disk(p)
        to_disk(ensure_path(path), serialize, exclude)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> "AngelLinkerComponent":
        path = ensure_path(path)
        loaded: dict = {}

        def load_cfg(p: Path) -> None:
            self.cfg.update(json.loads(Path(p).read_text(encoding="utf8")))

        deserialize = {
            "cfg": load_cfg,
            "model": lambda p: loaded.update(zip(("model", "tokenizer"), load_model_and_tokenizer(p, self.cfg["device"], self.cfg["dtype"]))),
            "kb": lambda p: loaded.update(kb=load_kb(p)),
            "trie": lambda p: loaded.update(trie_path=p),
            "fusion": lambda p: loaded.update(fusion=FusionWeights.from_disk(p)) if Path(p).is_file() else None,
            "index": lambda p: loaded.update(index_path=p),
            ENCODER_DIR: lambda p: loaded.update(name_encoder=NameEncoder.from_disk(p)) if Path(p).is_dir() else None,
        }
        from_disk(path, deserialize, exclude)
        if {"model", "kb"} - loaded.keys():
            raise LinkerError(Errors.E105.format(path=path))
        trie = load_or_build_trie(loaded["kb"], loaded["tokenizer"], loaded.get("trie_path"))
        self.cfg["model"] = str(path / "model")
        self.cfg["kb"] = str(path / "kb")
        self._kb_object = loaded["kb"]
        index_dir = loaded.get("index_path")
        self._linker = self._make_linker(
            loaded["model"], loaded["tokenizer"], loaded["kb"], trie, fusion=loaded.get("fusion"),
            index_dir=index_dir if index_dir is not None and Path(index_dir).is_dir() else None,
            name_encoder=loaded.get("name_encoder"),
        )
        return self


# spaCy validates an [initialize.components.angel_linker] block against initialize()'s signature
# with pydantic, which cannot resolve this module's postponed (string) annotations: give it types.
AngelLinkerComponent.initialize.__annotations__ = typing.get_type_hints(AngelLinkerComponent.initialize)


def _write_json(path: Union[str, Path], data: dict) -> None:
    atomic_write_json(path, data)
