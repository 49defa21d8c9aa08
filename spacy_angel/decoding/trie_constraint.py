"""The logits processor of constrained decoding: only trie continuations, and the beam's own scores.

Why a room: HF ``generate`` calls it at every step with the step's full-vocabulary
log-probabilities; it masks everything the KB's name trie does not allow (all beams in one
vectorised call) and keeps each running prefix's log-probability, so a finished name's score
needs no second decoder pass. Used by :class:`spacy_angel.decoding.decoder.ConstrainedDecoder`.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

# isort: split
from spacy_angel.seq2seq import lean_transformers  # noqa: F401  (before transformers' generation code: ~100 MB less RSS)

# isort: split
from transformers import LogitsProcessor

from spacy_angel.trie.token_trie import TokenTrie

#: Nodes with at least this many children are masked with a cached dense vector: the root of a
#: UMLS-size trie allows tens of thousands of tokens, and (row, token) pairs for every beam of
#: a batch cost 50-120 ms per step there.
DENSE_FANOUT = 512


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
        fanout = np.where(nodes >= 0, self.trie.first_edge[np.maximum(nodes, 0) + 1] - self.trie.first_edge[np.maximum(nodes, 0)], 0)
        wide = fanout >= DENSE_FANOUT
        if wide.any():  # the root and other wide nodes: a cached dense mask instead of (row, token) pairs
            unique, which = np.unique(nodes[wide], return_inverse=True)
            masks = torch.stack([self.dense_mask(int(n), scores.shape[1], scores.device) for n in unique])
            allowed = masks[torch.from_numpy(which.reshape(-1)).to(scores.device)]
            if wide.all():  # the first step: one pass over the scores
                masked = scores.masked_fill(~allowed, float("-inf"))
            else:
                masked = torch.full_like(scores, float("-inf"))
                wide_rows = torch.from_numpy(np.nonzero(wide)[0]).to(scores.device)
                masked[wide_rows] = scores[wide_rows].masked_fill(~allowed, float("-inf"))
        else:
            masked = torch.full_like(scores, float("-inf"))
        narrow = np.nonzero(~wide)[0]
        if narrow.size:
            rows, tokens = self.trie.allowed_pairs(nodes[narrow])
            rows_t = torch.from_numpy(narrow[rows]).to(scores.device)
            tokens_t = torch.from_numpy(tokens).to(scores.device)
            masked[rows_t, tokens_t] = scores[rows_t, tokens_t]
        if self.num_beams is not None:
            self._track(generated, masked)
        return masked

    def dense_mask(self, node: int, vocab: int, device: torch.device) -> torch.Tensor:
        """Boolean vocabulary mask of ``node``'s children, cached on the trie (it never changes)."""
        masks = self.trie.__dict__.setdefault("_dense_masks", {})
        key = (node, vocab, str(device))
        if key not in masks:
            mask = torch.zeros(vocab, dtype=torch.bool)
            mask[torch.from_numpy(self.trie.children(node).astype(np.int64))] = True
            masks[key] = mask.to(device)
        return masks[key]

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
