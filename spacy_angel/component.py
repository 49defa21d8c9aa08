"""The ``angel_linker`` spaCy component: entity spans -> KB concept ids with the generative linker.

Shaped like spaCy's own pipes (``spacy/pipeline/entity_linker.py``): a typed factory,
``predict`` apart from ``set_annotations``, and ``to_disk`` / ``from_disk`` serializer dicts, so
``nlp.to_disk()`` then ``spacy.load()`` restores model, tokenizer, KB and trie. The model is
loaded lazily: ``spacy.load`` calls the factory with the saved config (whose paths may not
exist on the loading machine) and then ``from_disk`` supplies the real files.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Union

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import ensure_path, from_disk, minibatch, to_disk

from .fileio import atomic_write_json
from .kb import KnowledgeBase
from .linker import AngelLinker, LinkerError, load_model_and_tokenizer, load_or_build_trie
from .modeling import save_pretrained_atomic
from .trie import TokenTrie
from .types import Candidate, Mention

EXTENSIONS = ("cui", "cui_score", "kb_name", "candidates", "kb_ents")


def install_extensions() -> None:
    """Register the span extensions once (idempotent, like spacy-transformers)."""
    for name in EXTENSIONS:
        if not Span.has_extension(name):
            Span.set_extension(name, default=None)


@Language.factory(
    "angel_linker",
    assigns=["span._.cui", "span._.cui_score", "span._.kb_name", "span._.candidates", "span._.kb_ents"],
    requires=["doc.ents"],
    default_config={
        "model": None,
        "kb": None,
        "num_beams": 5,
        "top_k": 5,
        "spans_key": None,
        "context_window": 32,
        "batch_size": 32,
        "device": "auto",
        "dtype": None,
        "threshold": 0.0,
        "lowercase": True,
        "expand_abbreviations": True,
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
    context_window: int,
    batch_size: int,
    device: str,
    dtype: Optional[str],
    threshold: float,
    lowercase: bool,
    expand_abbreviations: bool,
) -> "AngelLinkerComponent":
    """Create the component. ``model``: a local directory or hub id; ``kb``: a KB directory or KB file."""
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
    )


class AngelLinkerComponent:
    """Sets ``span._.cui``, ``cui_score``, ``kb_name``, ``candidates`` and ``kb_ents`` on entity spans.

    Scores are probabilities: ``exp`` of the length-normalised log-likelihood of the KB name
    (the geometric-mean token probability, in (0, 1]). A span whose best score is below
    ``threshold`` gets ``cui = None`` (NIL) but keeps its candidates. With
    ``expand_abbreviations`` and ``angel_abbreviations`` earlier in the pipeline, an abbreviated
    span is linked as its long form (written in place of the abbreviation in the model input),
    the preprocessing the published models were trained and evaluated with.
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
        context_window: int = 32,
        batch_size: int = 32,
        device: str = "auto",
        dtype: Optional[str] = None,
        threshold: float = 0.0,
        lowercase: bool = True,
        expand_abbreviations: bool = True,
    ) -> None:
        install_extensions()
        if top_k < 1 or num_beams < 1:
            raise ValueError("angel_linker: top_k and num_beams must be at least 1")
        if top_k > num_beams:
            raise ValueError(f"angel_linker: top_k ({top_k}) cannot exceed num_beams ({num_beams})")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"angel_linker: threshold must be a probability in [0, 1], got {threshold}")
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
        }
        self._kb_object = kb if isinstance(kb, KnowledgeBase) else None
        self._linker: Optional[AngelLinker] = None

    # -------------------------------------------------------------- loading
    @property
    def linker(self) -> AngelLinker:
        """The linker, loaded on first use from the configured model and KB."""
        if self._linker is None:
            if self.cfg["model"] is None:
                raise ValueError(
                    "angel_linker has no model: set config 'model' to a model directory or hub id "
                    "(e.g. nlp.add_pipe('angel_linker', config={'model': 'path/to/model', 'kb': 'path/to/kb'}))"
                )
            kb = self._kb_object if self._kb_object is not None else self._load_kb(self.cfg["kb"])
            model, tokenizer = load_model_and_tokenizer(self.cfg["model"], self.cfg["device"], self.cfg["dtype"])
            trie = load_or_build_trie(kb, tokenizer, None)
            self._linker = self._make_linker(model, tokenizer, kb, trie)
        return self._linker

    @staticmethod
    def _load_kb(kb: Optional[str]) -> KnowledgeBase:
        if kb is None:
            raise ValueError("angel_linker has no KB: set config 'kb' to a KB directory or a KB file")
        path = Path(kb)
        if path.is_dir():
            return KnowledgeBase.from_disk(path)
        if path.exists():
            return KnowledgeBase.from_files([path])
        raise ValueError(f"angel_linker: KB path {path} does not exist")

    def _make_linker(self, model, tokenizer, kb: KnowledgeBase, trie: TokenTrie) -> AngelLinker:
        return AngelLinker(
            model,
            tokenizer,
            kb,
            trie,
            num_beams=self.cfg["num_beams"],
            context_window=self.cfg["context_window"],
            batch_size=self.cfg["batch_size"],
            lowercase=self.cfg["lowercase"],
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

    def predict(self, docs: Sequence[Doc]) -> List[List[List[Candidate]]]:
        """Candidates for every span of every doc (no side effects)."""
        mentions: List[Mention] = []
        counts: List[int] = []
        for i, doc in enumerate(docs):
            spans = self.spans(doc)
            counts.append(len(spans))
            mentions.extend(self._mention(span, i) for span in spans)
        flat = self.linker.link(mentions, top_k=self.cfg["top_k"]) if mentions else []
        out: List[List[List[Candidate]]] = []
        pos = 0
        for count in counts:
            out.append(flat[pos : pos + count])
            pos += count
        return out

    def _mention(self, span: Span, doc_index: int) -> Mention:
        """The span in its document; an abbreviation is replaced by its long form when known."""
        doc = span.doc
        start, end = span.start_char, span.end_char
        # angel_abbreviations installs doc._.abbreviations and span._.long_form together.
        if self.cfg["expand_abbreviations"] and Doc.has_extension("abbreviations") and doc._.abbreviations:
            long_form = span._.long_form
            if long_form and long_form != span.text:
                text = doc.text[:start] + long_form + doc.text[end:]
                return Mention(str(doc_index), text, start, start + len(long_form))
        return Mention(str(doc_index), doc.text, start, end)

    def set_annotations(self, docs: Sequence[Doc], candidates: List[List[List[Candidate]]]) -> None:
        threshold = self.cfg["threshold"]
        kb = self.linker.kb
        for doc, doc_candidates in zip(docs, candidates):
            for span, cands in zip(self.spans(doc), doc_candidates):
                ranked = [(c.kb_ids[0], kb.preferred_name(c.kb_ids[0]) or c.name, math.exp(c.score)) for c in cands]
                span._.candidates = ranked
                span._.kb_ents = [(kb_id, score) for kb_id, _, score in ranked]
                if ranked and ranked[0][2] >= threshold:
                    span._.cui, span._.kb_name, span._.cui_score = ranked[0]
                else:
                    span._.cui, span._.kb_name, span._.cui_score = None, None, (ranked[0][2] if ranked else None)

    # -------------------------------------------------------------- serialization
    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        """Write cfg, model + tokenizer (safetensors), KB and trie into ``path``."""
        linker = self.linker
        serialize = {
            "cfg": lambda p: _write_json(p, {k: v for k, v in self.cfg.items() if k not in ("model", "kb")}),
            "model": lambda p: save_pretrained_atomic(linker.model, linker.tokenizer, p),
            "kb": lambda p: linker.kb.to_disk(p),
            "trie": lambda p: linker.trie.to_disk(p),
        }
        to_disk(ensure_path(path), serialize, exclude)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> "AngelLinkerComponent":
        path = ensure_path(path)
        loaded: dict = {}

        def load_cfg(p: Path) -> None:
            self.cfg.update(json.loads(Path(p).read_text(encoding="utf8")))

        deserialize = {
            "cfg": load_cfg,
            "model": lambda p: loaded.update(zip(("model", "tokenizer"), load_model_and_tokenizer(p, self.cfg["device"], self.cfg["dtype"]))),
            "kb": lambda p: loaded.update(kb=KnowledgeBase.from_disk(p)),
            "trie": lambda p: loaded.update(trie_path=p),
        }
        from_disk(path, deserialize, exclude)
        if {"model", "kb"} - loaded.keys():
            raise LinkerError(f"angel_linker data at {path} is incomplete (need model/ and kb/)")
        trie = load_or_build_trie(loaded["kb"], loaded["tokenizer"], loaded.get("trie_path"))
        self.cfg["model"] = str(path / "model")
        self.cfg["kb"] = str(path / "kb")
        self._kb_object = loaded["kb"]
        self._linker = self._make_linker(loaded["model"], loaded["tokenizer"], loaded["kb"], trie)
        return self


def _write_json(path: Union[str, Path], data: dict) -> None:
    atomic_write_json(path, data)
