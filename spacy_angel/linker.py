"""The generative linker: mention in context -> ranked KB names -> concept ids (no spaCy here).

Input and prompt follow the published GenBioEL / ANGEL checkpoints:

* encoder: ``<s> left-context START mention END right-context </s>`` (lowercased, markers kept
  as the plain words ``START`` / ``END``), every piece tokenized with a leading space;
* decoder: ``</s>`` (BART's decoder start) then `` mention is``, and the trie then allows
  only `` kb-name </s>`` continuations.

Batching: the ``mention is`` prompts differ in length, which is why the reference code decodes
one mention at a time. We left-pad the prompts, mask the padding with
``decoder_attention_mask`` and shift the decoder's learned positions per row
(:class:`_RowShiftedPositions`), so every row sees exactly the positions it saw in training
and a whole batch runs through one HF ``generate`` call with its KV cache.

Speed (numbers in docs/performance.md): for BART-family models the encoder-side keys/values
and the prompt are computed once per mention rather than once per beam
(:mod:`spacy_angel.beam_sharing`), the trie mask for all beams of a step is built in one
vectorised call (:class:`TrieConstraint`), and a name's score is the beam search's own
log-probability (kept by :class:`TrieConstraint`) instead of a second decoder pass. Identical
inputs are decoded once and cached. None of this changes the output: batched == one at a time,
shared == plain HF beam search (tests/test_linker.py, tests/test_rerank.py).
:meth:`AngelLinker.rerank` scores given candidate names teacher-forced, without beam search.
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import lean_transformers  # noqa: F401  (before transformers' generation code: ~100 MB less RSS)
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .beam_sharing import (
    folded_attention,
    lm_head_logits,
    placeholder_encoder_states,
    prefill_cross_attention,
    supports_beam_sharing,
)
from .kb import KnowledgeBase
from .trie import TokenTrie, TrieError
from .types import Candidate, Mention

logger = logging.getLogger(__name__)

DEFAULT_START_MARKER = "START"
DEFAULT_END_MARKER = "END"
PROMPT_SUFFIX = "is"


class LinkerError(ValueError):
    """The model, tokenizer, KB or trie cannot be used together."""


# ---------------------------------------------------------------------------- model loading
def load_model_and_tokenizer(model_name_or_path: Union[str, Path], device: str = "auto", dtype: Optional[str] = None):
    """Load a seq2seq model and its tokenizer from a local directory or a hub id.

    ``trust_remote_code`` stays off: only architectures that transformers itself ships load.
    """
    path = Path(model_name_or_path)
    if path.exists():
        if not path.is_dir():
            raise LinkerError(f"model path {path} is not a directory")
        if not (path / "config.json").exists():
            raise LinkerError(f"model directory {path} has no config.json")
        if not any((path / f).exists() for f in ("tokenizer.json", "vocab.json", "spiece.model", "tokenizer_config.json")):
            raise LinkerError(f"model directory {path} has no tokenizer (tokenizer.json or vocab.json + merges.txt)")
    elif path.is_absolute() or str(model_name_or_path).startswith((".", "~")) or str(model_name_or_path).count("/") > 1:
        # not a hub id ("org/name"): a local directory that is not there
        raise LinkerError(f"model directory {path} does not exist (no config.json to load)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_name_or_path), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise LinkerError(f"could not load a tokenizer from {model_name_or_path}: {err}") from err
    torch_dtype = _torch_dtype(dtype)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(
            str(model_name_or_path), trust_remote_code=False, torch_dtype=torch_dtype, use_safetensors=None
        )
    except (OSError, ValueError) as err:
        raise LinkerError(f"could not load a seq2seq model from {model_name_or_path}: {err}") from err
    model.eval()
    model.to(resolve_device(device))
    return model, tokenizer


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _torch_dtype(dtype: Optional[str]) -> Optional[torch.dtype]:
    if dtype in (None, "", "float32", "fp32"):
        return None
    table = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise LinkerError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
    return table[dtype]


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the vocabulary, so a trie built for another tokenizer is detected and rebuilt."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256()
    for token, idx in sorted(vocab.items(), key=lambda item: item[1]):
        digest.update(f"{idx}\t{token}\n".encode("utf8"))
    return digest.hexdigest()


# ---------------------------------------------------------------------------- trie for a KB
def tokenize_name(tokenizer, name: str) -> List[int]:
    """Token ids of a KB name as the decoder emits it: leading space, no special tokens."""
    return tokenizer(" " + name, add_special_tokens=False)["input_ids"]


def build_trie(kb: KnowledgeBase, tokenizer, batch_size: int = 50_000, progress: bool = False) -> TokenTrie:
    """Tokenize every KB name (in chunks, to keep memory flat) and build the token trie."""
    chunks: List[np.ndarray] = []
    lengths: List[np.ndarray] = []
    names = kb.names
    iterator: Iterable[int] = range(0, len(names), batch_size)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="trie", unit="chunk")
    for lo in iterator:
        batch = [" " + n for n in names[lo : lo + batch_size]]
        ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
        lengths.append(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)))
        chunks.append(np.fromiter((t for x in ids for t in x), dtype=np.int32 if len(tokenizer) < 2**31 else np.int64))
    if not chunks:
        raise LinkerError("the KB has no names: cannot build a trie")
    meta = {"kb_fingerprint": kb.fingerprint(), "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}
    return TokenTrie.build_flat(
        np.concatenate(chunks),
        np.concatenate(lengths),
        eos_token_id=tokenizer.eos_token_id,
        vocab_size=len(tokenizer),
        meta=meta,
    )


def load_or_build_trie(kb: KnowledgeBase, tokenizer, path: Optional[Union[str, Path]] = None) -> TokenTrie:
    """Load the trie saved at ``path`` if it matches this KB and tokenizer; otherwise rebuild (and save)."""
    expected = {"kb_fingerprint": kb.fingerprint(), "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}
    if path is not None and Path(path).exists():
        try:
            trie = TokenTrie.from_disk(path)
            if all(trie.meta.get(k) == v for k, v in expected.items()):
                return trie
            logger.info("trie at %s is stale (KB or tokenizer changed): rebuilding", path)
        except TrieError as err:
            logger.warning("could not load trie at %s (%s): rebuilding", path, err)
    trie = build_trie(kb, tokenizer)
    if path is not None:
        trie.to_disk(path)
    return trie


def check_trie(trie: TokenTrie, kb: KnowledgeBase, tokenizer) -> None:
    """Refuse a trie that belongs to another tokenizer or KB (names would map to wrong concepts)."""
    if trie.meta.get("tokenizer_fingerprint") not in (None, tokenizer_fingerprint(tokenizer)):
        raise LinkerError("the trie was built with a different tokenizer than the model's: rebuild it")
    if trie.meta.get("kb_fingerprint") not in (None, kb.fingerprint()):
        raise LinkerError("the trie was built from a different KB: rebuild it")
    if trie.vocab_size > len(tokenizer) or trie.eos_token_id != tokenizer.eos_token_id:
        raise LinkerError("the trie's vocabulary does not match the model's tokenizer")


# ---------------------------------------------------------------------------- decoding pieces
class _RowShiftedPositions:
    """Lets BART's learned decoder positions start at 0 in every left-padded row.

    BART computes decoder positions from one ``cache_position`` shared by the batch; with
    left-padded prompts each row needs ``cache_position - padding``. ``row_shift`` is set per
    generate call (one value per batch row, repeated over beams). The embedding module's
    ``forward`` is patched on the instance rather than wrapped in a new module, so the model's
    parameter names (and hence ``save_pretrained`` / training) are untouched.
    """

    def __init__(self, embed: torch.nn.Module) -> None:
        self.embed = embed
        self.row_shift: Optional[torch.Tensor] = None
        self._original_forward = embed.forward
        embed.forward = self._forward
        embed._angel_row_shift = self

    def _forward(self, input_ids, past_key_values_length: int = 0, position_ids=None):
        if self.row_shift is None:
            return self._original_forward(input_ids, past_key_values_length, position_ids=position_ids)
        if position_ids is None:
            seq_len = input_ids.shape[1]
            position_ids = torch.arange(past_key_values_length, past_key_values_length + seq_len, device=self.embed.weight.device)
        positions = (position_ids.view(1, -1) - self.row_shift.view(-1, 1)).clamp(min=0)
        return torch.nn.functional.embedding(positions + self.embed.offset, self.embed.weight)


def _install_row_shift(model: PreTrainedModel) -> Optional[_RowShiftedPositions]:
    decoder = model.get_decoder()
    embed = getattr(decoder, "embed_positions", None)
    if embed is None or not hasattr(embed, "offset"):
        return None  # relative-position models (T5) need no shift
    existing = getattr(embed, "_angel_row_shift", None)
    return existing if existing is not None else _RowShiftedPositions(embed)


class TrieConstraint(LogitsProcessor):
    """Sets every token outside the trie to -inf, for all beams of a step in one go.

    The node of each running prefix is found from its parent prefix's node (cached from the
    previous step) plus the last token, so a step costs one trie lookup per beam.

    With ``num_beams`` given it also keeps the beam search's own scores: HF hands this
    processor the step's full-vocabulary log-probabilities, so the log-probability of a prefix
    is its parent's plus the chosen token's, and :meth:`name_score` gives a finished name's
    total (end-of-name included) without a second, teacher-forced pass over the decoder.
    Prefixes are keyed per input row group (``row // num_beams``), since two mentions can share
    a prefix but not its probability.
    """

    def __init__(self, trie: TokenTrie, prompt_length: int, num_beams: Optional[int] = None) -> None:
        self.trie = trie
        self.prompt_length = prompt_length
        self.cache: Dict[bytes, int] = {b"": 0}
        self.num_beams = num_beams
        self._prev_rows: Dict[Tuple[int, bytes], int] = {}
        self._prev_total: Optional[torch.Tensor] = None
        self._prev_scores: Optional[torch.Tensor] = None
        self._finished: Dict[Tuple[int, bytes], float] = {}

    def nodes_for(self, generated: np.ndarray) -> np.ndarray:
        nodes = np.empty(generated.shape[0], dtype=np.int64)
        cache = self.cache
        for row in range(generated.shape[0]):
            seq = generated[row]
            key = seq.tobytes()
            node = cache.get(key)
            if node is None:
                parent = cache.get(seq[:-1].tobytes())
                if parent is None:
                    parent = self.trie.walk(seq[:-1])
                node = self.trie.child(parent, int(seq[-1])) if parent >= 0 else -1
                cache[key] = node
            nodes[row] = node
        return nodes

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :].cpu().numpy().astype(np.int64)
        nodes = self.nodes_for(generated)
        rows, tokens = self.trie.allowed_pairs(nodes)
        rows_t = torch.from_numpy(rows).to(scores.device)
        tokens_t = torch.from_numpy(tokens).to(scores.device)
        masked = torch.full_like(scores, float("-inf"))
        masked[rows_t, tokens_t] = scores[rows_t, tokens_t]
        if self.num_beams is not None:
            self._track(generated, masked)
        return masked

    def _track(self, generated: np.ndarray, masked: torch.Tensor) -> None:
        beams = self.num_beams
        keys = [(row // beams, generated[row].tobytes()) for row in range(generated.shape[0])]
        if generated.shape[1] == 0:
            total = torch.zeros(generated.shape[0], dtype=masked.dtype, device=masked.device)
        else:
            parents = [self._prev_rows.get((group, key[: -generated.itemsize])) for group, key in keys]
            if self._prev_total is None or any(p is None for p in parents):
                self.num_beams = None  # lost track (should not happen): the caller re-scores instead
                return
            parent_t = torch.tensor(parents, device=masked.device)
            last = torch.from_numpy(generated[:, -1]).to(masked.device)
            total = self._prev_total[parent_t] + self._prev_scores[parent_t, last]
        eos = self.trie.eos_token_id
        for key, value in zip(keys, (total + masked[:, eos]).tolist()):
            self._finished[key] = value
        self._prev_rows = {key: row for row, key in enumerate(keys)}
        self._prev_total = total
        self._prev_scores = masked

    @property
    def tracking(self) -> bool:
        return self.num_beams is not None

    def name_score(self, group: int, name_tokens: np.ndarray) -> Optional[float]:
        """Summed log-probability of ``name_tokens`` (ending with end-of-name) for input ``group``."""
        return self._finished.get((group, np.ascontiguousarray(name_tokens[:-1], dtype=np.int64).tobytes()))


# ---------------------------------------------------------------------------- the linker
class AngelLinker:
    """Links mentions to KB concepts with a constrained seq2seq model (ANGEL / GenBioEL style)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        kb: KnowledgeBase,
        trie: Optional[TokenTrie] = None,
        *,
        num_beams: int = 5,
        context_window: int = 32,
        lowercase: bool = True,
        start_marker: str = DEFAULT_START_MARKER,
        end_marker: str = DEFAULT_END_MARKER,
        max_input_length: Optional[int] = None,
        max_prompt_length: int = 64,
        batch_size: int = 32,
        length_penalty: float = 1.0,
        cache_size: int = 100_000,
        share_beams: Optional[bool] = None,
        score_budget: int = 1 << 25,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise LinkerError("the tokenizer has no end-of-sequence token")
        if num_beams < 1 or batch_size < 1:
            raise LinkerError("num_beams and batch_size must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.kb = kb
        self.trie = trie if trie is not None else build_trie(kb, tokenizer)
        check_trie(self.trie, kb, tokenizer)
        if self.trie.vocab_size > model.config.vocab_size:
            raise LinkerError(
                f"the trie uses token ids up to {self.trie.vocab_size}, the model's vocabulary has {model.config.vocab_size}"
            )
        self.num_beams = num_beams
        self.context_window = context_window
        self.lowercase = lowercase
        self.start_marker = start_marker
        self.end_marker = end_marker
        model_max = getattr(model.config, "max_position_embeddings", 1024) or 1024
        self.max_input_length = min(max_input_length or model_max, model_max)
        self.max_prompt_length = max_prompt_length
        self.batch_size = batch_size
        self.length_penalty = length_penalty
        self.max_name_length = self.trie.max_depth
        self._cache: "OrderedDict[Tuple[Tuple[int, ...], Tuple[int, ...]], List[Tuple[int, float]]]" = OrderedDict()
        self.cache_size = cache_size
        self._positions = _install_row_shift(model)
        self._start_ids = tokenize_name(tokenizer, start_marker) if start_marker else []
        self._end_ids = tokenize_name(tokenizer, end_marker) if end_marker else []
        self._prompt_suffix = tokenize_name(tokenizer, PROMPT_SUFFIX)
        # Cross-attention keys/values once per mention instead of once per beam (beam_sharing.py);
        # None = wherever the model supports it. Either way the outputs are the same.
        supported = supports_beam_sharing(model)
        if share_beams and not supported:
            raise LinkerError("share_beams=True needs a BART-style decoder with sdpa or eager attention")
        self.share_beams = supported if share_beams is None else bool(share_beams)
        # Most logits floats (rows x positions x vocabulary) one teacher-forced pass may hold.
        self.score_budget = int(score_budget)

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: Union[str, Path],
        kb: Union[KnowledgeBase, str, Path],
        trie_path: Optional[Union[str, Path]] = None,
        device: str = "auto",
        dtype: Optional[str] = None,
        **kwargs,
    ) -> "AngelLinker":
        """Load model + tokenizer, the KB (object or directory) and a matching trie (built if needed)."""
        model, tokenizer = load_model_and_tokenizer(model_name_or_path, device=device, dtype=dtype)
        if not isinstance(kb, KnowledgeBase):
            kb = KnowledgeBase.from_disk(kb)
        trie = load_or_build_trie(kb, tokenizer, trie_path)
        return cls(model, tokenizer, kb, trie, **kwargs)

    # -------------------------------------------------------------- input formatting
    def normalize_text(self, text: str) -> str:
        text = " ".join(text.split())
        return text.lower() if self.lowercase else text

    def format_source(self, mention: Mention) -> str:
        """The encoder input as text (for inspection; :meth:`encode` builds the same ids)."""
        left, surface, right = self._pieces(mention)
        parts = [left, self.start_marker, surface, self.end_marker, right]
        return " ".join(p for p in parts if p)

    def format_prompt(self, mention: Mention) -> str:
        return f"{self._pieces(mention)[1]} {PROMPT_SUFFIX}"

    def _pieces(self, mention: Mention) -> Tuple[str, str, str]:
        if not (0 <= mention.start <= mention.end <= len(mention.text)):
            raise LinkerError(
                f"mention offsets {mention.start}-{mention.end} lie outside its text of length {len(mention.text)}"
                f" (doc {mention.doc_id!r})"
            )
        left_words = mention.text[: mention.start].split()
        right_words = mention.text[mention.end :].split()
        w = self.context_window
        left = " ".join(left_words[-w:]) if w > 0 else ""
        right = " ".join(right_words[:w]) if w > 0 else ""
        return self.normalize_text(left), self.normalize_text(mention.surface), self.normalize_text(right)

    def encode(self, mention: Mention) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """(encoder ids, decoder prompt ids) for a mention, truncated to the model's limits.

        The mention is kept whole where possible; context is cut from the far ends first.
        """
        left, surface, right = self._pieces(mention)
        tok = self.tokenizer
        mention_ids = tokenize_name(tok, surface) if surface else []
        budget = self.max_input_length - 2 - len(self._start_ids) - len(self._end_ids)
        mention_ids = mention_ids[: max(budget, 1)]
        remaining = max(budget - len(mention_ids), 0)
        left_ids = tokenize_name(tok, left) if left else []
        right_ids = tokenize_name(tok, right) if right else []
        keep_left = min(len(left_ids), remaining // 2 + max(remaining // 2 - len(right_ids), 0))
        keep_right = min(len(right_ids), remaining - keep_left)
        left_ids = left_ids[len(left_ids) - keep_left :]
        right_ids = right_ids[:keep_right]
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        source = bos + left_ids + self._start_ids + mention_ids + self._end_ids + right_ids + [tok.eos_token_id]
        start = self.model.config.decoder_start_token_id
        if start is None:
            start = tok.eos_token_id
        prompt = [start] + mention_ids[: self.max_prompt_length] + self._prompt_suffix
        return tuple(source), tuple(prompt)

    # -------------------------------------------------------------- linking
    def link(self, mentions: Sequence[Mention], top_k: int = 5, progress: bool = False) -> List[List[Candidate]]:
        """Top-k candidates per mention, best first, concept ids de-duplicated in rank order.

        Identical (mention, context) inputs are decoded once, and results are cached across calls.
        """
        top_k = max(1, min(top_k, self.num_beams))
        encoded = [self.encode(m) for m in mentions]
        ranked = self._ranked(encoded, progress=progress)
        return [self._candidates(r, top_k) for r in ranked]

    def _ranked(self, encoded: Sequence[Tuple[Tuple[int, ...], Tuple[int, ...]]], progress: bool = False) -> List[List[Tuple[int, float]]]:
        """Ranked (name index, score) per encoded input: cache hits, then batched beam search."""
        # Sorting by length keeps padding (wasted encoder and decoder work) low in every batch.
        todo = sorted({key for key in encoded if key not in self._cache}, key=lambda k: (len(k[0]), len(k[1])))
        fresh: Dict[Tuple[Tuple[int, ...], Tuple[int, ...]], List[Tuple[int, float]]] = {}
        batches = range(0, len(todo), self.batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="linking", unit="batch")
        for lo in batches:
            chunk = todo[lo : lo + self.batch_size]
            for key, result in zip(chunk, self._decode_batch(chunk)):
                fresh[key] = result
                self._remember(key, result)
        # ``fresh`` keeps this call's results even when the LRU cache is smaller than the call.
        return [fresh[key] if key in fresh else self._cache[key] for key in encoded]

    def _remember(self, key, result) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = result
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        self._cache.clear()

    def _candidates(self, ranked: List[Tuple[int, float]], top_k: int) -> List[Candidate]:
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
        index=None,
        progress: bool = False,
    ) -> List[List[Candidate]]:
        """Rank given KB names per mention by the model's length-normalised log-likelihood.

        No beam search: every (mention, name) pair is scored teacher-forced, many pairs per
        decoder pass, so a cheap retriever's top-N can be re-ranked by the generative model.

        ``candidates`` is one list of KB names per mention, or ``"trie"`` (the names this
        linker's constrained beam search proposes, re-scored), or ``"tfidf"`` (the
        ``num_candidates`` nearest names from ``index``, any object with
        ``nearest_names(queries, k) -> [[(name index, score), ...], ...]`` such as
        ``training.tfidf.NameIndex``). Names must be KB names (normalised as the KB does);
        concept ids are de-duplicated in rank order as in :meth:`link`.
        """
        top_k = max(1, top_k)
        encoded = [self.encode(m) for m in mentions]
        name_lists = self._candidate_indices(mentions, encoded, candidates, num_candidates, index)
        unique = sorted({(key, names) for key, names in zip(encoded, name_lists)}, key=lambda u: (len(u[0][0]), len(u[1])))
        scored: Dict[tuple, List[Tuple[int, float]]] = {}
        batches = range(0, len(unique), self.batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="re-ranking", unit="batch")
        for lo in batches:
            chunk = unique[lo : lo + self.batch_size]
            for item, result in zip(chunk, self._score_names([key for key, _ in chunk], [names for _, names in chunk])):
                scored[item] = result
        out = []
        for key, names in zip(encoded, name_lists):
            ranked = sorted(scored[(key, names)], key=lambda item: -item[1])
            out.append(self._candidates(ranked, top_k))
        return out

    def _candidate_indices(self, mentions, encoded, candidates, num_candidates: int, index) -> List[Tuple[int, ...]]:
        """KB name indices to re-rank, per mention (de-duplicated, order kept)."""
        if isinstance(candidates, str):
            if candidates == "trie":
                return [tuple(i for i, _ in ranked) for ranked in self._ranked(encoded)]
            if candidates == "tfidf":
                if index is None or not hasattr(index, "nearest_names"):
                    raise LinkerError(
                        "rerank(candidates='tfidf') needs index=<a fitted TF-IDF name index>, "
                        "e.g. training.tfidf.NameIndex(kb).fit()"
                    )
                queries = [self._pieces(m)[1] for m in mentions]
                hits = index.nearest_names(queries, num_candidates)
                return [tuple(dict.fromkeys(int(i) for i, _ in row)) for row in hits]
            raise LinkerError(f"unknown candidate source {candidates!r}: use 'trie', 'tfidf' or lists of KB names")
        if len(candidates) != len(mentions):
            raise LinkerError(f"got {len(candidates)} candidate lists for {len(mentions)} mentions")
        out = []
        for m_idx, (mention, names) in enumerate(zip(mentions, candidates)):
            if isinstance(names, str):
                raise LinkerError(f"candidates for mention {m_idx} must be a list of names, not the string {names!r}")
            indices = []
            for name in names:
                idx = self.kb.name_index(name)
                if idx is None:
                    raise LinkerError(
                        f"candidate {name!r} for mention {m_idx} ({mention.surface!r}, doc {mention.doc_id!r}) "
                        "is not a name in the KB: only KB names can be scored"
                    )
                indices.append(idx)
            out.append(tuple(dict.fromkeys(indices)))
        return out

    @torch.inference_mode()
    def _score_names(self, batch, name_lists: Sequence[Tuple[int, ...]]) -> List[List[Tuple[int, float]]]:
        """(name index, score) for every listed name of every input, a few inputs per decoder pass."""
        eos = self.tokenizer.eos_token_id
        pad = self._pad_id
        token_cache: Dict[int, List[int]] = {}

        def tokens(idx: int) -> List[int]:
            if idx not in token_cache:
                token_cache[idx] = tokenize_name(self.tokenizer, self.kb.names[idx]) + [eos]
            return token_cache[idx]

        results: List[List[Tuple[int, float]]] = [[] for _ in batch]
        vocab = self.model.config.vocab_size

        def cost(i: int) -> int:
            """Logits rows the pass for input ``i`` materialises."""
            names = name_lists[i]
            if self.share_beams:  # only real name tokens reach the LM head
                return max(1, sum(len(tokens(idx)) for idx in names))
            return max(1, len(names)) * (max((len(tokens(idx)) for idx in names), default=1) + len(batch[i][1]))

        lo = 0
        while lo < len(batch):
            # Bound the logits tensor (rows x vocabulary floats) by scoring a few inputs per pass.
            hi, used = lo, 0
            while hi < len(batch) and (hi == lo or (used + cost(hi)) * vocab <= self.score_budget):
                used += cost(hi)
                hi += 1
            subnames = name_lists[lo:hi]
            repeats = max(1, max(len(n) for n in subnames))
            gen_len = max([len(tokens(idx)) for names in subnames for idx in names] or [1])
            input_ids, attention, prompt, prompt_mask, shift = self._pad_batch(list(batch[lo:hi]))
            encoder_hidden = self._encode(input_ids, attention)
            # Inputs with fewer names are padded with a bare end-of-name row (one token, score unused).
            generated = torch.full((len(subnames) * repeats, gen_len), pad, dtype=torch.long)
            generated[:, 0] = eos
            for i, names in enumerate(subnames):
                for r, idx in enumerate(names):
                    seq = tokens(idx)
                    generated[i * repeats + r, : len(seq)] = torch.tensor(seq)
            scores = self._score(encoder_hidden, attention, prompt, prompt_mask, shift, generated.to(self.model.device), repeats)
            scores = scores.float().cpu().tolist()
            for i, names in enumerate(subnames):
                results[lo + i] = [(idx, scores[i * repeats + r]) for r, idx in enumerate(names)]
            lo = hi
        return results

    # -------------------------------------------------------------- model passes
    @property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def _pad_batch(self, batch: Sequence[Tuple[Tuple[int, ...], Tuple[int, ...]]]):
        """Right-padded sources, left-padded prompts, and each prompt's padding (position shift)."""
        device = self.model.device
        pad = self._pad_id
        n = len(batch)
        src_len = max(len(s) for s, _ in batch)
        prm_len = max(len(p) for _, p in batch)
        input_ids = torch.full((n, src_len), pad, dtype=torch.long)
        attention = torch.zeros((n, src_len), dtype=torch.long)
        prompt = torch.full((n, prm_len), pad, dtype=torch.long)
        prompt_mask = torch.zeros((n, prm_len), dtype=torch.long)
        shift = torch.zeros(n, dtype=torch.long)
        for i, (src, prm) in enumerate(batch):
            input_ids[i, : len(src)] = torch.tensor(src)
            attention[i, : len(src)] = 1
            prompt[i, prm_len - len(prm) :] = torch.tensor(prm)  # left-padded
            prompt_mask[i, prm_len - len(prm) :] = 1
            shift[i] = prm_len - len(prm)
        return input_ids.to(device), attention.to(device), prompt.to(device), prompt_mask.to(device), shift.to(device)

    def _encode(self, input_ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        return self.model.get_encoder()(input_ids=input_ids, attention_mask=attention, return_dict=True).last_hidden_state

    def _shared_prefix_cache(self, encoder_hidden, attention, prompt, prompt_mask, shift, repeats: int):
        """A decoder cache holding, once per input, the cross-attention keys/values and the prompt.

        Every beam (or re-ranked name) of an input starts from the same encoder states and the
        same `` mention is`` prompt, so both are run once per input and only the prompt's small
        self-attention cache is copied ``repeats`` times; the prompt's logits are never computed.
        Decoding then feeds just the prompt's last token. See :mod:`spacy_angel.beam_sharing`.
        """
        model = self.model
        cache = prefill_cross_attention(model, encoder_hidden)
        if prompt.shape[1] > 1:
            if self._positions is not None:
                self._positions.row_shift = shift
            try:
                with folded_attention(model):
                    model.get_decoder()(
                        input_ids=prompt[:, :-1],
                        attention_mask=prompt_mask[:, :-1],
                        encoder_hidden_states=placeholder_encoder_states(encoder_hidden),
                        encoder_attention_mask=attention,
                        past_key_values=cache,
                        use_cache=True,
                        return_dict=True,
                    )
            finally:
                if self._positions is not None:
                    self._positions.row_shift = None
        cache.self_attention_cache.batch_repeat_interleave(repeats)
        return cache

    @torch.inference_mode()
    def _score(
        self,
        encoder_hidden: torch.Tensor,
        attention: torch.Tensor,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        shift: torch.Tensor,
        generated: torch.Tensor,
        repeats: int,
    ) -> torch.Tensor:
        """Length-normalised log-probability of ``generated`` names after their prompts.

        ``generated`` has ``repeats`` rows per input (beams or re-ranked names), each ending
        with end-of-name and padded after it. Tokens are not renormalised over the trie,
        matching the beam search's scores.
        """
        eos = self.tokenizer.eos_token_id
        is_eos = generated == eos
        seen_eos = torch.cumsum(is_eos.long(), dim=1)
        gen_mask = (seen_eos == 0) | (is_eos & (seen_eos == 1))  # tokens up to and including the first eos
        prm_len = prompt.shape[1]
        rep_prompt, rep_mask = prompt.repeat_interleave(repeats, 0), prompt_mask.repeat_interleave(repeats, 0)
        if self.share_beams:
            # Prompt and cross-attention once per input; teacher-force only the names.
            cache = self._shared_prefix_cache(encoder_hidden, attention, prompt, prompt_mask, shift, repeats)
            decoder_ids = torch.cat([rep_prompt[:, -1:], generated[:, :-1]], dim=1)
            decoder_mask = torch.cat([rep_mask, gen_mask[:, :-1].long()], dim=1)
            decoder_ids = decoder_ids.masked_fill(decoder_mask[:, prm_len - 1 :] == 0, self._pad_id)
            states = placeholder_encoder_states(encoder_hidden)
            context = folded_attention(self.model)
        else:
            cache = None
            decoder_ids = torch.cat([rep_prompt, generated], dim=1)[:, :-1]
            decoder_mask = torch.cat([rep_mask, gen_mask.long()], dim=1)[:, :-1]
            decoder_ids = decoder_ids.masked_fill(decoder_mask == 0, self._pad_id)
            states = encoder_hidden
            context = nullcontext()
        if self._positions is not None:
            self._positions.row_shift = shift.repeat_interleave(repeats)
        try:
            with context:
                if self.share_beams:
                    # Decoder states, then the LM head only where a name token is predicted:
                    # padding never reaches the (rows x vocabulary) matrix.
                    hidden = self.model.get_decoder()(
                        input_ids=decoder_ids,
                        attention_mask=decoder_mask,
                        encoder_hidden_states=states.repeat_interleave(repeats, 0),
                        encoder_attention_mask=attention.repeat_interleave(repeats, 0),
                        past_key_values=cache,
                        use_cache=True,
                        return_dict=True,
                    ).last_hidden_state
                    logits = lm_head_logits(self.model, hidden[gen_mask]).float()
                else:
                    logits = self.model(
                        encoder_outputs=(states.repeat_interleave(repeats, 0),),
                        attention_mask=attention.repeat_interleave(repeats, 0),
                        decoder_input_ids=decoder_ids,
                        decoder_attention_mask=decoder_mask,
                        use_cache=False,
                    ).logits[:, -generated.shape[1] :, :][gen_mask].float()
        finally:
            if self._positions is not None:
                self._positions.row_shift = None
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, generated[gen_mask].unsqueeze(-1)).squeeze(-1)
        row_of = torch.arange(generated.shape[0], device=generated.device).unsqueeze(1).expand_as(generated)[gen_mask]
        totals = torch.zeros(generated.shape[0], dtype=token_logp.dtype, device=token_logp.device)
        totals.index_add_(0, row_of, token_logp)
        lengths = gen_mask.sum(dim=1).clamp(min=1).float()
        return totals / lengths.pow(self.length_penalty)

    @torch.inference_mode()
    def _decode_batch(self, batch: Sequence[Tuple[Tuple[int, ...], Tuple[int, ...]]]) -> List[List[Tuple[int, float]]]:
        """Constrained beam search for a batch: ranked (name index, score) per input."""
        input_ids, attention, prompt, prompt_mask, shift = self._pad_batch(batch)
        n, prm_len = prompt.shape
        beams = self.num_beams
        eos = self.tokenizer.eos_token_id
        constraint = TrieConstraint(self.trie, prm_len, num_beams=beams)
        encoder_hidden = self._encode(input_ids, attention)
        if self.share_beams:
            cache = self._shared_prefix_cache(encoder_hidden, attention, prompt, prompt_mask, shift, beams)
            states, attention_context = placeholder_encoder_states(encoder_hidden), folded_attention(self.model)
        else:
            cache, states, attention_context = None, encoder_hidden, nullcontext()
        if self._positions is not None:
            self._positions.row_shift = shift.repeat_interleave(beams)
        try:
            with attention_context:
                out = self.model.generate(
                    encoder_outputs=BaseModelOutput(last_hidden_state=states),
                    attention_mask=attention,
                    decoder_input_ids=prompt,
                    decoder_attention_mask=prompt_mask,
                    past_key_values=cache,
                    num_beams=beams,
                    num_return_sequences=beams,
                    max_new_tokens=self.max_name_length,
                    min_new_tokens=0,
                    length_penalty=self.length_penalty,
                    early_stopping=True,
                    do_sample=False,
                    no_repeat_ngram_size=0,
                    repetition_penalty=1.0,
                    forced_bos_token_id=None,  # would fight the trie (BART configs set it)
                    forced_eos_token_id=None,
                    bad_words_ids=None,
                    logits_processor=LogitsProcessorList([constraint]),
                    return_dict_in_generate=False,
                    pad_token_id=self._pad_id,
                    eos_token_id=eos,
                    decoder_start_token_id=self.model.config.decoder_start_token_id,
                    use_cache=True,
                )
        finally:
            if self._positions is not None:
                self._positions.row_shift = None
        generated = out[:, prm_len:]
        sequences = generated.cpu().numpy()
        # Scores: the beam search's own log-probabilities, kept by the constraint (no second
        # decoder pass); only if it lost track are the names re-scored teacher-forced.
        totals: List[Optional[float]] = [None] * (n * beams)
        ends: List[int] = [-1] * (n * beams)
        for row in range(n * beams):
            end = np.nonzero(sequences[row] == eos)[0]
            if end.size:
                ends[row] = int(end[0])
                if constraint.tracking:
                    totals[row] = constraint.name_score(row // beams, sequences[row, : ends[row] + 1])
        if any(t is None for t, e in zip(totals, ends) if e >= 0):
            rescored = self._score(encoder_hidden, attention, prompt, prompt_mask, shift, generated, beams).float().cpu().tolist()
            scores = [s if e >= 0 else float("-inf") for s, e in zip(rescored, ends)]
        else:
            scores = [t / float(e + 1) ** self.length_penalty if e >= 0 else float("-inf") for t, e in zip(totals, ends)]
        results: List[List[Tuple[int, float]]] = []
        for i in range(n):
            ranked: List[Tuple[int, float]] = []
            seen_names = set()
            for b in range(beams):
                row = i * beams + b
                score = scores[row]
                if ends[row] < 0 or not math.isfinite(score):
                    continue  # unfinished, or ran off the constraint (KB smaller than the beam): never a non-KB name
                name_idx = self.trie.name_at(self.trie.walk(sequences[row, : ends[row] + 1]))
                if name_idx < 0 or name_idx in seen_names:
                    continue
                seen_names.add(name_idx)
                ranked.append((name_idx, score))
            ranked.sort(key=lambda item: -item[1])
            results.append(ranked)
        return results
