"""The generative linker: mentions in context -> ranked KB names -> concept ids (no spaCy here).

:class:`AngelLinker` only orchestrates; each step has its own room:

* :mod:`spacy_angel.seq2seq.prompt`: mention -> encoder / decoder-prompt token ids (the input format);
* :mod:`spacy_angel.decoding.decoder`: the model passes (trie-constrained beam search, name scoring);
* :mod:`spacy_angel.trie.kb_trie`: the KB's names as a token trie, checked against the tokenizer;
* :mod:`spacy_angel.seq2seq.loading`: loading the model and tokenizer.

What is left here is what needs all of them: checking that model, tokenizer, KB and trie fit
together, batching and caching (identical inputs are decoded once, and results are kept across
calls), and turning ranked KB names into :class:`~spacy_angel.types.Candidate` concepts, ids
de-duplicated in rank order. :meth:`AngelLinker.link` runs one of three modes (``MODES``):
``beam`` (constrained beam search), ``rerank`` (the TF-IDF top names scored teacher-forced) or
``hybrid`` (both, fused: :mod:`spacy_angel.linking.hybrid`); :meth:`AngelLinker.rerank` scores given
candidate names teacher-forced, without beam search.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from spacy_angel.decoding.decoder import ConstrainedDecoder, EncodedInput, Ranked
from spacy_angel.errors import Errors, LinkerError
from spacy_angel.kb.readers import load_kb
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.linking.fusion import FusionWeights
from spacy_angel.linking.hybrid import hybrid_evidence, link_hybrid
from spacy_angel.linking.result_cache import ResultCache, batches
from spacy_angel.retrieval.name_encoder import load_name_encoder
from spacy_angel.seq2seq.loading import load_model_and_tokenizer
from spacy_angel.seq2seq.prompt import DEFAULT_END_MARKER, DEFAULT_START_MARKER, PromptFormat, tokenize_name
from spacy_angel.trie.kb_trie import build_trie, check_trie, load_or_build_trie
from spacy_angel.trie.token_trie import TokenTrie
from spacy_angel.types import Candidate, Mention

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from spacy_angel.retrieval.dense_index import DenseNameIndex
    from spacy_angel.retrieval.name_encoder import NameEncoder
    from spacy_angel.retrieval.tfidf import NameIndex


MODES = ("beam", "rerank", "hybrid")
#: (KB, directory the index may be saved in) -> a fitted candidate retriever over the KB's names: the
#: swappable part of the component config (``spacy_angel.tfidf_retriever.v1``, as spaCy's
#: ``spacy.CandidateGenerator.v1``); None: the char 3-gram TF-IDF index (load or fit, then save)
Retriever = Callable[["KnowledgeBase", Optional[Union[str, Path]]], "NameIndex"]


class _Setting:
    """A linker attribute that lives in one of its rooms (``prompt_format`` or ``decoder``).

    Reading or (where allowed) assigning ``linker.num_beams`` reaches the room that uses it, so
    the linker's attributes stay what they always were and can never disagree with the room's.
    """

    def __init__(self, room: str, writable: bool = True) -> None:
        self.room = room
        self.writable = writable
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: Optional[type] = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.room), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        if not self.writable:
            raise AttributeError(Errors.E268.format(name=self.name))
        setattr(getattr(obj, self.room), self.name, value)


class AngelLinker:
    """Links mentions to KB concepts with a constrained seq2seq model (ANGEL / GenBioEL style)."""

    context_window = _Setting("prompt_format")
    lowercase = _Setting("prompt_format")
    max_input_length = _Setting("prompt_format")
    max_prompt_length = _Setting("prompt_format")
    start_marker = _Setting("prompt_format", writable=False)
    end_marker = _Setting("prompt_format", writable=False)
    trie = _Setting("decoder")
    num_beams = _Setting("decoder")
    length_penalty = _Setting("decoder")
    score_budget = _Setting("decoder")
    share_beams = _Setting("decoder", writable=False)
    max_name_length = _Setting("decoder", writable=False)

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        kb: KnowledgeBase,
        trie: Optional[TokenTrie] = None,
        *,
        num_beams: int = 5,
        context_window: Optional[int] = None,
        lowercase: bool = True,
        start_marker: str = DEFAULT_START_MARKER,
        end_marker: str = DEFAULT_END_MARKER,
        max_input_length: Optional[int] = None,
        max_prompt_length: int = 64,
        batch_size: int = 32,
        length_penalty: float = 1.0,
        cache_size: int = 100_000,
        share_beams: Optional[bool] = None,
        score_budget: int = 1 << 22,
        mode: str = "beam",
        num_candidates: int = 20,
        name_index: Optional["NameIndex"] = None,
        index_dir: Optional[Union[str, Path]] = None,
        retriever: Optional[Retriever] = None,
        fusion: Optional[FusionWeights] = None,
        name_encoder: Optional["NameEncoder"] = None,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise LinkerError(Errors.E050)
        if num_beams < 1 or batch_size < 1:
            raise LinkerError(Errors.E060)
        self.model = model
        self.tokenizer = tokenizer
        self.kb = kb
        if trie is None:
            trie = build_trie(kb, tokenizer)
        check_trie(trie, kb, tokenizer)
        if trie.vocab_size > model.config.vocab_size:
            raise LinkerError(Errors.E024.format(trie_vocab=trie.vocab_size, vocab=model.config.vocab_size))
        self.prompt_format = PromptFormat.for_model(
            model,
            tokenizer,
            max_input_length,
            context_window=context_window,
            lowercase=lowercase,
            start_marker=start_marker,
            end_marker=end_marker,
            max_prompt_length=max_prompt_length,
        )
        self.decoder = ConstrainedDecoder(
            model,
            tokenizer,
            trie,
            name_tokens=self._name_tokens,
            num_beams=num_beams,
            length_penalty=length_penalty,
            share_beams=share_beams,
            score_budget=score_budget,
        )
        self.batch_size = batch_size
        self._spell = lru_cache(maxsize=1 << 17)(lambda name: tuple(tokenize_name(self.tokenizer, name)))
        self._cache = ResultCache(cache_size)  # encoded input -> ranked names (beam mode)
        self._hybrid_cache = ResultCache(cache_size)  # (encoded input, surface) -> name evidence
        self.mode = check_mode(mode)
        if num_candidates < 1:
            raise LinkerError(Errors.E066.format(value=num_candidates))
        self.num_candidates = num_candidates
        self._name_index = name_index
        self.index_dir = index_dir
        self.retriever = retriever
        self.fusion = fusion if fusion is not None else FusionWeights()
        self.name_encoder = name_encoder
        self._dense_index: Optional["DenseNameIndex"] = None

    @property
    def name_index(self) -> "NameIndex":
        """The char 3-gram TF-IDF index over the KB names, on first use (hybrid and rerank modes):
        the one given, else the one saved in ``index_dir`` (usually the KB directory; fitted and
        saved there when missing or stale), else fitted in memory."""
        if self._name_index is None:
            from spacy_angel.retrieval.tfidf import load_or_build_index

            self._name_index = (self.retriever or load_or_build_index)(self.kb, self.index_dir)
        return self._name_index

    @name_index.setter
    def name_index(self, index: "NameIndex") -> None:
        self._name_index = index

    @property
    def dense_index(self) -> Optional["DenseNameIndex"]:
        """The KB's names under the model's dense name encoder, on first use (hybrid mode): encoded once, then
        mapped from the user's cache (:func:`~spacy_angel.retrieval.dense_index.default_vectors_dir`); None
        when the model has no encoder (``MODEL/name_encoder``, trained by ``train kb-linker``)."""
        if self._dense_index is None and self.name_encoder is not None:
            from spacy_angel.retrieval.dense_index import DenseNameIndex, default_vectors_dir

            # mapped from the user's cache after the first load, not written beside the KB: a file added to
            # the KB folder would change another owner's output (see dense_index's module doc)
            self._dense_index = DenseNameIndex(self.kb, self.name_encoder, cache_dir=default_vectors_dir())
        return self._dense_index

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: Union[str, Path],
        kb: Union[KnowledgeBase, str, Path],
        trie_path: Optional[Union[str, Path]] = None,
        device: str = "auto",
        dtype: Optional[str] = None,
        **kwargs: Any,
    ) -> "AngelLinker":
        """Load model + tokenizer, the KB (object, directory or KB file) and a matching trie (built if needed)."""
        model, tokenizer = load_model_and_tokenizer(model_name_or_path, device=device, dtype=dtype)
        kb_dir = Path(kb) if not isinstance(kb, KnowledgeBase) and Path(kb).is_dir() else None
        kb = load_kb(kb)
        trie = load_or_build_trie(kb, tokenizer, trie_path)
        kwargs.setdefault("index_dir", kb_dir)
        if kwargs.get("fusion") is None and Path(str(model_name_or_path)).is_dir():
            kwargs["fusion"] = FusionWeights.for_model(model_name_or_path)
        if "name_encoder" not in kwargs:
            kwargs["name_encoder"] = load_name_encoder(model_name_or_path)
        return cls(model, tokenizer, kb, trie, **kwargs)

    # -------------------------------------------------------------- input format (prompt.py)
    def normalize_text(self, text: str) -> str:
        return self.prompt_format.normalize(text)

    def format_source(self, mention: Mention) -> str:
        """The encoder input as text (for inspection; :meth:`encode` builds the same ids)."""
        return self.prompt_format.source_text(mention)

    def format_prompt(self, mention: Mention) -> str:
        return self.prompt_format.prompt_text(mention)

    def _pieces(self, mention: Mention) -> Tuple[str, str, str]:
        return self.prompt_format.pieces(mention)

    def encode(self, mention: Mention) -> EncodedInput:
        """(encoder ids, decoder prompt ids) for a mention, truncated to the model's limits."""
        return self.prompt_format.encode(mention)

    def _name_tokens(self, name_idx: int) -> List[int]:
        """Token ids of KB name ``name_idx`` as the trie spells it (read from the KB as it is now).

        Kept per name string (the tokenizer is fixed): hybrid linking scores the same TF-IDF
        names for many mentions, and tokenizing them again was 3% of its time.
        """
        return list(self._spell(self.kb.names[name_idx]))

    # -------------------------------------------------------------- linking
    def link(
        self, mentions: Sequence[Mention], top_k: int = 5, progress: bool = False, mode: Optional[str] = None
    ) -> List[List[Candidate]]:
        """Top-k candidates per mention, best first, concept ids de-duplicated in rank order.

        ``mode`` (default: the linker's ``mode``): ``beam``, ``rerank`` or ``hybrid`` (see
        ``MODES``). Identical (mention, context) inputs are decoded once, and results are cached
        across calls.
        """
        mode = check_mode(mode or self.mode)
        if mode == "hybrid":
            return link_hybrid(self, mentions, max(1, top_k), self._hybrid_cache, progress=progress)
        if mode == "rerank":
            return self.rerank(
                mentions, "tfidf", top_k, num_candidates=self.num_candidates, index=self.name_index, progress=progress
            )
        top_k = max(1, min(top_k, self.num_beams))
        encoded = [self.encode(m) for m in mentions]
        ranked = self._ranked(encoded, progress=progress)
        return [self._candidates(r, top_k) for r in ranked]

    def _ranked(self, encoded: Sequence[EncodedInput], progress: bool = False) -> List[Ranked]:
        """Ranked (name index, score) per encoded input: cache hits, then batched beam search."""
        # Sorting by length keeps padding (wasted encoder and decoder work) low in every batch.
        todo = sorted({key for key in encoded if key not in self._cache}, key=lambda k: (len(k[0]), len(k[1])))
        fresh: Dict[EncodedInput, Ranked] = {}
        for chunk in batches(todo, self.batch_size, "linking", progress):
            for key, result in zip(chunk, self.decoder.beam_search(chunk)):
                fresh[key] = result
                self._cache.remember(key, result)
        # ``fresh`` keeps this call's results even when the LRU cache is smaller than the call.
        return [fresh[key] if key in fresh else self._cache[key] for key in encoded]

    @property
    def cache_size(self) -> int:
        """Results each cache (beam, hybrid) keeps; 0 turns caching off."""
        return self._cache.size

    @cache_size.setter
    def cache_size(self, size: int) -> None:
        self._cache.size = self._hybrid_cache.size = size

    def hybrid_evidence(self, mentions: Sequence[Mention], progress: bool = False):
        """Per mention, the hybrid mode's candidate names with their features (for fitting fusion)."""
        return hybrid_evidence(self, mentions, self.num_candidates, self._hybrid_cache, progress=progress)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._hybrid_cache.clear()

    @property
    def cached(self) -> int:
        """Results held by the caches (0 after :meth:`clear_cache`): how a test proves a run decoded afresh."""
        return len(self._cache) + len(self._hybrid_cache)

    def _candidates(self, ranked: Ranked, top_k: int) -> List[Candidate]:
        """Ranked names -> ranked concepts: each id once, under its best-ranked name."""
        out: List[Candidate] = []
        seen: set = set()
        for name_idx, score in ranked:
            ids = tuple(i for i in self.kb.ids_for_index(name_idx) if i not in seen)
            if not ids:
                continue
            seen.update(ids)
            out.append(Candidate(ids, self.kb.names[name_idx], score))
            if len(out) >= top_k:
                break
        return out

    # -------------------------------------------------------------- re-ranking
    def rerank(
        self,
        mentions: Sequence[Mention],
        candidates: Union[str, Sequence[Sequence[str]]] = "trie",
        top_k: int = 5,
        *,
        num_candidates: int = 20,
        index: Any = None,
        progress: bool = False,
    ) -> List[List[Candidate]]:
        """Rank given KB names per mention by the model's length-normalised log-likelihood.

        No beam search: every (mention, name) pair is scored teacher-forced, many pairs per
        decoder pass, so a cheap retriever's top-N can be re-ranked by the generative model.

        ``candidates`` is one list of KB names per mention, or ``"trie"`` (the names this
        linker's constrained beam search proposes, re-scored), or ``"tfidf"`` (the
        ``num_candidates`` nearest names from ``index``, any object with
        ``nearest_names(queries, k) -> [[(name index, score), ...], ...]`` such as
        :class:`spacy_angel.retrieval.tfidf.NameIndex`). Names must be KB names (normalised as the KB does);
        concept ids are de-duplicated in rank order as in :meth:`link`.
        """
        top_k = max(1, top_k)
        encoded = [self.encode(m) for m in mentions]
        name_lists = self._candidate_indices(mentions, encoded, candidates, num_candidates, index)
        unique = sorted({(key, names) for key, names in zip(encoded, name_lists)}, key=lambda u: (len(u[0][0]), len(u[1]), u))
        scored: Dict[Tuple[EncodedInput, Tuple[int, ...]], Ranked] = {}
        for chunk in batches(unique, self.batch_size, "re-ranking", progress):
            results = self.decoder.score_names([key for key, _ in chunk], [names for _, names in chunk])
            scored.update(zip(chunk, results))
        out = []
        for key, names in zip(encoded, name_lists):
            ranked = sorted(scored[(key, names)], key=lambda item: -item[1])
            out.append(self._candidates(ranked, top_k))
        return out

    def _candidate_indices(
        self,
        mentions: Sequence[Mention],
        encoded: Sequence[EncodedInput],
        candidates: Union[str, Sequence[Sequence[str]]],
        num_candidates: int,
        index: Any,
    ) -> List[Tuple[int, ...]]:
        """KB name indices to re-rank, per mention (de-duplicated, order kept)."""
        if isinstance(candidates, str):
            if candidates == "trie":
                return [tuple(i for i, _ in ranked) for ranked in self._ranked(encoded)]
            if candidates == "tfidf":
                if index is None or not hasattr(index, "nearest_names"):
                    raise LinkerError(Errors.E061)
                queries = [self._pieces(m)[1] for m in mentions]
                hits = index.nearest_names(queries, num_candidates)
                return [tuple(dict.fromkeys(int(i) for i, _ in row)) for row in hits]
            raise LinkerError(Errors.E062.format(source=candidates))
        if len(candidates) != len(mentions):
            raise LinkerError(Errors.E063.format(lists=len(candidates), mentions=len(mentions)))
        out = []
        for m_idx, (mention, names) in enumerate(zip(mentions, candidates)):
            if isinstance(names, str):
                raise LinkerError(Errors.E064.format(idx=m_idx, names=names))
            indices = []
            for name in names:
                idx = self.kb.name_index(name)
                if idx is None:
                    raise LinkerError(
                        Errors.E065.format(name=name, idx=m_idx, surface=mention.surface, doc_id=mention.doc_id)
                    )
                indices.append(idx)
            out.append(tuple(dict.fromkeys(indices)))
        return out


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise LinkerError(Errors.E067.format(mode=mode, modes=", ".join(MODES)))
    return mode
