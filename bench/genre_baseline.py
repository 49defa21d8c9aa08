"""The upstream way of constrained linking, re-implemented as a benchmark baseline.

GENRE, GenBioEL and ANGEL keep the KB as a Python dict-of-dicts prefix trie over token ids
and decode one mention at a time with Hugging Face ``generate(prefix_allowed_tokens_fn=...)``:
the callback is asked, for every beam of every step, which tokens may follow the beam's
prefix. This module does exactly that with the same model, encoder input and decoder prompt
as :class:`spacy_angel.linking.linker.AngelLinker`, so the benchmark compares decoding strategies and
not input formats. (Benchmark code: it is never imported by the ``spacy_angel`` package.)
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from spacy_angel.linking.linker import AngelLinker
from spacy_angel.seq2seq.prompt import tokenize_name
from spacy_angel.types import Candidate, Mention


class DictTrie:
    """GENRE-style nested-dict trie: ``{token: {token: {...}}}``, one dict per node."""

    def __init__(self, sequences: Iterable[Sequence[int]] = ()) -> None:
        self.root: Dict[int, dict] = {}
        for seq in sequences:
            self.add(seq)

    def add(self, sequence: Sequence[int]) -> None:
        node = self.root
        for token in sequence:
            node = node.setdefault(int(token), {})

    def get(self, prefix: Sequence[int]) -> List[int]:
        """Tokens allowed after ``prefix`` ([] when the prefix left the trie)."""
        node = self.root
        for token in prefix:
            node = node.get(int(token))
            if node is None:
                return []
        return list(node.keys())


def build_dict_trie(names: Sequence[str], tokenizer) -> Tuple[DictTrie, Dict[Tuple[int, ...], int]]:
    """Trie over `` name </s>`` token sequences, plus token sequence -> first KB name index."""
    eos = tokenizer.eos_token_id
    trie = DictTrie()
    name_of: Dict[Tuple[int, ...], int] = {}
    for start in range(0, len(names), 50_000):
        chunk = [" " + n for n in names[start : start + 50_000]]
        for offset, ids in enumerate(tokenizer(chunk, add_special_tokens=False)["input_ids"]):
            seq = tuple(ids) + (eos,)
            trie.add(seq)
            name_of.setdefault(seq, start + offset)
    return trie, name_of


class GenreBaseline:
    """Batch size 1, ``prefix_allowed_tokens_fn`` over a :class:`DictTrie` (the upstream recipe)."""

    def __init__(
        self, linker: AngelLinker, trie: DictTrie, name_of: Dict[Tuple[int, ...], int], max_new_tokens: Optional[int] = None
    ) -> None:
        self.linker = linker  # only for its model, tokenizer, KB and input encoding
        self.trie = trie
        self.name_of = name_of
        self.max_new_tokens = linker.max_name_length if max_new_tokens is None else max_new_tokens

    @torch.inference_mode()
    def link_one(self, mention: Mention, top_k: int = 5) -> List[Candidate]:
        linker = self.linker
        model, tok = linker.model, linker.tokenizer
        source, prompt = linker.encode(mention)
        prompt_len = len(prompt)
        eos = tok.eos_token_id

        def allowed(batch_id: int, sent: torch.Tensor) -> List[int]:
            # Upstream returns trie.get(sent); a beam that left the trie gets only </s> so
            # HF's processor never sees an empty list (the same rule as TokenTrie.allowed_pairs).
            return self.trie.get(sent.tolist()[prompt_len:]) or [eos]

        beams = linker.num_beams
        out = model.generate(
            input_ids=torch.tensor([source], device=model.device),
            attention_mask=torch.ones((1, len(source)), dtype=torch.long, device=model.device),
            decoder_input_ids=torch.tensor([prompt], device=model.device),
            num_beams=beams,
            num_return_sequences=beams,
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=0,
            length_penalty=linker.length_penalty,
            early_stopping=True,
            do_sample=False,
            no_repeat_ngram_size=0,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            prefix_allowed_tokens_fn=allowed,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos,
            use_cache=True,
        )
        ranked: List[Tuple[int, float]] = []
        seen = set()
        for seq, score in zip(out.sequences[:, prompt_len:].tolist(), out.sequences_scores.tolist()):
            if eos not in seq:
                continue
            name_idx = self.name_of.get(tuple(seq[: seq.index(eos) + 1]), -1)
            if name_idx < 0 or name_idx in seen:
                continue
            seen.add(name_idx)
            ranked.append((name_idx, float(score)))
        return linker._candidates(ranked, top_k)

    def link(self, mentions: Sequence[Mention], top_k: int = 5) -> List[List[Candidate]]:
        return [self.link_one(m, top_k) for m in mentions]


def name_tokens(linker: AngelLinker, name: str) -> List[int]:
    return tokenize_name(linker.tokenizer, name) + [linker.tokenizer.eos_token_id]
