"""The model passes: batched trie-constrained beam search, and teacher-forced scores of given names.

Why a room: this is the only code that runs the seq2seq model at inference, and the place that
makes it fast without changing a single output. Everything here takes already encoded inputs
(``(source ids, prompt ids)`` from :mod:`spacy_angel.seq2seq.prompt`) and KB *name indices* (the trie's
leaves); turning those into concepts is the linker's job.

* A whole batch runs through one HF ``generate`` call: prompts are left-padded and decoder
  positions shifted per row (:mod:`spacy_angel.decoding.padding`), so batched == one at a time.
* For BART-family models the cross-attention keys/values and the prompt are computed once per
  mention rather than once per beam (:mod:`spacy_angel.decoding.beam_sharing`); the trie mask for all
  beams of a step is one vectorised call (:class:`TrieConstraint`).
* A name's score is its length-normalised log-probability, taken from the beam search itself
  (kept by :class:`TrieConstraint`); :meth:`ConstrainedDecoder.score_names` computes the same
  quantity teacher-forced for other names, one pass over their prefix tree (:mod:`.prefix_scoring`).
* The encoder runs once per batch: :meth:`ConstrainedDecoder.beam_then_score` serves beam search
  and the scoring of extra candidates from one encoder output.

Batched == one at a time and shared == plain HF beam search (tests/linking/test_linker.py, tests/decoding/test_rerank.py).
"""
from __future__ import annotations

import math
from collections import Counter
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

# isort: split
from spacy_angel.seq2seq import lean_transformers  # noqa: F401  (before transformers' generation code: ~100 MB less RSS)

# isort: split
from transformers import LogitsProcessorList, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from spacy_angel.decoding.beam_sharing import (
    folded_attention,
    lm_head_logits,
    placeholder_encoder_states,
    prefill_cross_attention,
    supports_beam_sharing,
)
from spacy_angel.decoding.padding import EncodedInput, PaddedBatch, install_row_shift, pad_batch, shifted_positions
from spacy_angel.decoding.prefix_scoring import score_by_prefix_trees
from spacy_angel.decoding.trie_constraint import TrieConstraint
from spacy_angel.errors import Errors, LinkerError
from spacy_angel.trie.token_trie import TokenTrie

Ranked = List[Tuple[int, float]]  # (KB name index, score), best first


class ConstrainedDecoder:
    """Runs a seq2seq model over encoded inputs: trie-constrained beam search and name scoring.

    ``name_tokens(i)`` gives the token ids of KB name ``i`` as the trie spells it (no
    end-of-name); it is only needed by :meth:`score_names`. ``share_beams=None`` shares the
    encoder-side work between beams wherever the model supports it; ``score_budget`` bounds the
    logits (rows x vocabulary floats) that one teacher-forced pass may hold: 4M floats (16 MB)
    cut hybrid linking's transient memory from 144 to 86 MB at the same speed as 32M (NCBI
    test x MEDIC, small model, 1 thread); a GPU may want more.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        trie: TokenTrie,
        *,
        name_tokens: Optional[Callable[[int], Sequence[int]]] = None,
        num_beams: int = 5,
        length_penalty: float = 1.0,
        share_beams: Optional[bool] = None,
        score_budget: int = 1 << 22,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise LinkerError(Errors.E050)
        if num_beams < 1:
            raise LinkerError(Errors.E054)
        supported = supports_beam_sharing(model)
        if share_beams and not supported:
            raise LinkerError(Errors.E051)
        self.model = model
        self.tokenizer = tokenizer
        self.trie = trie
        self.name_tokens = name_tokens
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.share_beams = supported if share_beams is None else bool(share_beams)
        self.score_budget = int(score_budget)
        self._positions = install_row_shift(model)
        self.prefix_sharing = True  # score_names over the names' prefix tree (False: one padded row per name)
        self.beam_stats: Counter = Counter()  # per hypothesis: kept, duplicate, infinite, not_a_name (the trie failed)

    @property
    def max_name_length(self) -> int:
        return self.trie.max_depth

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    # ------------------------------------------------------------------ public passes
    def pad_batch(self, batch: Sequence[EncodedInput]) -> PaddedBatch:
        """Right-padded sources, left-padded prompts, and each prompt's padding (position shift)."""
        return pad_batch(batch, self.pad_id, self.model.device)

    @torch.inference_mode()
    def encode(self, input_ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden states for a padded batch (what ``encoded=`` takes)."""
        return self.model.get_encoder()(input_ids=input_ids, attention_mask=attention, return_dict=True).last_hidden_state

    def beam_search(self, batch: Sequence[EncodedInput], encoded: Optional[torch.Tensor] = None) -> List[Ranked]:
        """Constrained beam search: ranked (name index, score) per input, at most ``num_beams`` each.

        ``encoded`` is :meth:`encode`'s output for ``pad_batch(batch)``, to reuse an encoder pass.
        """
        if not batch:
            return []
        padded = self.pad_batch(batch)
        return self._beam_search(padded, self._encoded(padded, encoded))

    def score_names(
        self, batch: Sequence[EncodedInput], name_lists: Sequence[Sequence[int]], encoded: Optional[torch.Tensor] = None
    ) -> List[Ranked]:
        """(name index, score) for every listed name of every input, in the order given.

        The score is the length-normalised log-probability, the same quantity the beam search
        reports, computed teacher-forced. ``encoded`` as in :meth:`beam_search`.
        """
        if len(name_lists) != len(batch):
            raise LinkerError(Errors.E053.format(lists=len(name_lists), inputs=len(batch)))
        if not batch:
            return []
        padded = self.pad_batch(batch)
        return self._score_names(padded, self._encoded(padded, encoded), name_lists)

    def beam_then_score(
        self, batch: Sequence[EncodedInput], extra: Callable[[List[Ranked]], Sequence[Sequence[int]]]
    ) -> Tuple[List[Ranked], List[Ranked]]:
        """Beam search, then scores of the names ``extra(beam results)`` lists per input, one encoder pass.

        For hybrid linking: names another retriever proposed (and the beam missed) get the beam's score.
        """
        if not batch:
            return [], []
        padded = self.pad_batch(batch)
        hidden = self.encode(padded.input_ids, padded.attention)
        ranked = self._beam_search(padded, hidden)
        extra_name_lists = extra(ranked)
        if len(extra_name_lists) != len(batch):
            raise LinkerError(Errors.E053.format(lists=len(extra_name_lists), inputs=len(batch)))
        return ranked, self._score_names(padded, hidden, extra_name_lists)

    # ------------------------------------------------------------------ internals
    def _encoded(self, padded: PaddedBatch, encoded: Optional[torch.Tensor]) -> torch.Tensor:
        if encoded is None:
            return self.encode(padded.input_ids, padded.attention)
        rows, length = padded.input_ids.shape
        if encoded.dim() != 3 or encoded.shape[0] != rows or encoded.shape[1] != length:
            raise LinkerError(Errors.E052.format(shape=tuple(encoded.shape), rows=rows, length=length))
        return encoded

    @torch.inference_mode()
    def _score_names(self, padded: PaddedBatch, hidden: torch.Tensor, name_lists: Sequence[Sequence[int]]) -> List[Ranked]:
        """Teacher-forced scores, a few inputs per decoder pass so the logits stay within budget."""
        eos = self.tokenizer.eos_token_id
        if self.name_tokens is None and any(name_lists):
            raise LinkerError(Errors.E055)
        token_cache: Dict[int, List[int]] = {}

        def tokens(idx: int) -> List[int]:
            if idx not in token_cache:
                token_cache[idx] = list(self.name_tokens(idx)) + [eos]
            return token_cache[idx]

        if self.prefix_sharing and self.share_beams and self._positions is not None:
            return score_by_prefix_trees(self, padded, hidden, name_lists, tokens)
        n, vocab = len(name_lists), self.model.config.vocab_size
        prompt_lengths = padded.prompt_mask.sum(dim=1).tolist()

        def cost(i: int) -> int:
            """Logits rows the pass for input ``i`` materialises."""
            names = name_lists[i]
            if self.share_beams:  # only real name tokens reach the LM head
                return max(1, sum(len(tokens(idx)) for idx in names))
            return max(1, len(names)) * (max((len(tokens(idx)) for idx in names), default=1) + prompt_lengths[i])

        results: List[Ranked] = [[] for _ in range(n)]
        lo = 0
        while lo < n:
            hi, used = lo, 0
            while hi < n and (hi == lo or (used + cost(hi)) * vocab <= self.score_budget):
                used += cost(hi)
                hi += 1
            subnames = name_lists[lo:hi]
            sub = padded if (lo, hi) == (0, n) else padded.rows(lo, hi)
            sub_hidden = hidden if sub is padded else hidden[lo:hi, : sub.input_ids.shape[1]]
            repeats = max(1, max(len(names) for names in subnames))
            gen_len = max([len(tokens(idx)) for names in subnames for idx in names] or [1])
            # Inputs with fewer names are padded with a bare end-of-name row (one token, score unused).
            generated = torch.full((len(subnames) * repeats, gen_len), self.pad_id, dtype=torch.long)
            generated[:, 0] = eos
            for i, names in enumerate(subnames):
                for r, idx in enumerate(names):
                    seq = tokens(idx)
                    generated[i * repeats + r, : len(seq)] = torch.tensor(seq)
            scores = self._score(sub, sub_hidden, generated.to(self.model.device), repeats).float().cpu().tolist()
            for i, names in enumerate(subnames):
                results[lo + i] = [(idx, scores[i * repeats + r]) for r, idx in enumerate(names)]
            lo = hi
        return results

    def _shared_prefix_cache(self, padded: PaddedBatch, hidden: torch.Tensor, repeats: int):
        """A decoder cache holding, once per input, the cross-attention keys/values and the prompt.

        Every beam (or scored name) of an input starts from the same encoder states and the
        same `` mention is`` prompt, so both are run once per input and only the prompt's small
        self-attention cache is copied ``repeats`` times; the prompt's logits are never computed.
        Decoding then feeds just the prompt's last token. See :mod:`spacy_angel.decoding.beam_sharing`.
        """
        model = self.model
        cache = prefill_cross_attention(model, hidden)
        if padded.prompt.shape[1] > 1:
            with self._shifted(padded.shift), folded_attention(model):
                model.get_decoder()(
                    input_ids=padded.prompt[:, :-1],
                    attention_mask=padded.prompt_mask[:, :-1],
                    encoder_hidden_states=placeholder_encoder_states(hidden),
                    encoder_attention_mask=padded.attention,
                    past_key_values=cache,
                    use_cache=True,
                    return_dict=True,
                )
        cache.self_attention_cache.batch_repeat_interleave(repeats)
        return cache

    def _shifted(self, shift: torch.Tensor):
        """Row-shifted decoder positions for a ``with`` block (nothing to do for relative positions)."""
        return shifted_positions(self._positions, shift)

    @torch.inference_mode()
    def _score(self, padded: PaddedBatch, hidden: torch.Tensor, generated: torch.Tensor, repeats: int) -> torch.Tensor:
        """Length-normalised log-probability of ``generated`` names after their prompts.

        ``generated`` has ``repeats`` rows per input (beams or scored names), each ending with
        end-of-name and padded after it. Tokens are not renormalised over the trie, matching
        the beam search's scores.
        """
        _, attention, prompt, prompt_mask, shift = padded
        eos = self.tokenizer.eos_token_id
        is_eos = generated == eos
        seen_eos = torch.cumsum(is_eos.long(), dim=1)
        gen_mask = (seen_eos == 0) | (is_eos & (seen_eos == 1))  # tokens up to and including the first eos
        prm_len = prompt.shape[1]
        rep_prompt, rep_mask = prompt.repeat_interleave(repeats, 0), prompt_mask.repeat_interleave(repeats, 0)
        rep_attention = attention.repeat_interleave(repeats, 0)
        with self._shifted(shift.repeat_interleave(repeats)):
            if self.share_beams:
                # Prompt and cross-attention once per input; teacher-force only the names, and
                # apply the LM head only where a name token is predicted (never to padding).
                cache = self._shared_prefix_cache(padded, hidden, repeats)
                decoder_ids = torch.cat([rep_prompt[:, -1:], generated[:, :-1]], dim=1)
                decoder_mask = torch.cat([rep_mask, gen_mask[:, :-1].long()], dim=1)
                decoder_ids = decoder_ids.masked_fill(decoder_mask[:, prm_len - 1 :] == 0, self.pad_id)
                with folded_attention(self.model):
                    states = self.model.get_decoder()(
                        input_ids=decoder_ids,
                        attention_mask=decoder_mask,
                        encoder_hidden_states=placeholder_encoder_states(hidden).repeat_interleave(repeats, 0),
                        encoder_attention_mask=rep_attention,
                        past_key_values=cache,
                        use_cache=True,
                        return_dict=True,
                    ).last_hidden_state
                logits = lm_head_logits(self.model, states[gen_mask]).float()
            else:
                decoder_ids = torch.cat([rep_prompt, generated], dim=1)[:, :-1]
                decoder_mask = torch.cat([rep_mask, gen_mask.long()], dim=1)[:, :-1]
                decoder_ids = decoder_ids.masked_fill(decoder_mask == 0, self.pad_id)
                logits = self.model(
                    encoder_outputs=(hidden.repeat_interleave(repeats, 0),),
                    attention_mask=rep_attention,
                    decoder_input_ids=decoder_ids,
                    decoder_attention_mask=decoder_mask,
                    use_cache=False,
                ).logits[:, -generated.shape[1] :, :][gen_mask].float()
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, generated[gen_mask].unsqueeze(-1)).squeeze(-1)
        row_of = torch.arange(generated.shape[0], device=generated.device).unsqueeze(1).expand_as(generated)[gen_mask]
        totals = torch.zeros(generated.shape[0], dtype=token_logp.dtype, device=token_logp.device)
        totals.index_add_(0, row_of, token_logp)
        lengths = gen_mask.sum(dim=1).clamp(min=1).float()
        return totals / lengths.pow(self.length_penalty)

    @torch.inference_mode()
    def _beam_search(self, padded: PaddedBatch, hidden: torch.Tensor) -> List[Ranked]:
        n, prm_len = padded.prompt.shape
        beams = self.num_beams
        eos = self.tokenizer.eos_token_id
        constraint = TrieConstraint(self.trie, prm_len, num_beams=beams)
        if self.share_beams:
            cache = self._shared_prefix_cache(padded, hidden, beams)
            states, attention_context = placeholder_encoder_states(hidden), folded_attention(self.model)
        else:
            cache, states, attention_context = None, hidden, nullcontext()
        with self._shifted(padded.shift.repeat_interleave(beams)), attention_context:
            out = self.model.generate(
                # a fresh wrapper: generate expands the wrapped states per beam in place
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                attention_mask=padded.attention,
                decoder_input_ids=padded.prompt,
                decoder_attention_mask=padded.prompt_mask,
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
                pad_token_id=self.pad_id,
                eos_token_id=eos,
                decoder_start_token_id=self.model.config.decoder_start_token_id,
                use_cache=True,
            )
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
            rescored = self._score(padded, hidden, generated, beams).float().cpu().tolist()
            scores = [s if e >= 0 else float("-inf") for s, e in zip(rescored, ends)]
        else:
            scores = [t / float(e + 1) ** self.length_penalty if e >= 0 else float("-inf") for t, e in zip(totals, ends)]
        results: List[Ranked] = []
        for i in range(n):
            ranked: Ranked = []
            seen_names = set()
            for b in range(beams):
                row = i * beams + b
                score = scores[row]
                finite = ends[row] >= 0 and math.isfinite(score)  # else unfinished, or forced off a KB smaller than the beam
                name_idx = self.trie.name_at(self.trie.walk(sequences[row, : ends[row] + 1])) if finite else -1
                outcome = ("not_a_name" if finite else "infinite") if name_idx < 0 else "kept"
                outcome = "duplicate" if outcome == "kept" and name_idx in seen_names else outcome
                self.beam_stats[outcome] += 1
                if outcome != "kept":
                    continue  # dropped: never a non-KB name (a finite "not_a_name" means the constraint failed)
                seen_names.add(name_idx)
                ranked.append((name_idx, score))
            ranked.sort(key=lambda item: -item[1])
            results.append(ranked)
        return results
