"""Encoder-side work done once per mention instead of once per beam (BART-family decoders).

In HF beam search every beam of a mention carries its own copy of the cross-attention keys
and values, although all beams of a mention attend to the same encoder states:

* the first decoder step projects the beam-expanded encoder states (``num_beams`` times the
  work of one projection),
* every step ``reorder_cache`` copies the whole cross-attention cache (``index_select``), and
* every step attention reads ``num_beams`` copies of the same keys and values.

Profiling the linker on CPU put these at about half of the decoding time. Here the keys and
values are projected once per mention (:func:`prefill_cross_attention`), kept un-expanded in a
cache whose reordering leaves them alone (:class:`SharedCrossAttentionCache`; beam search
only ever reorders beams within a mention), and the attention function folds a mention's beams
into the query-length axis (:func:`beam_folded_attention`), which is exact for
cross-attention because it has no causal mask. Everything else (the self-attention cache, HF
``generate``'s beam bookkeeping, logits processors) is untouched.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from spacy_angel.errors import Errors

FOLDED_ATTENTION = "angel_beam_folded_sdpa"


def beam_folded_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA that accepts keys/values with fewer rows than queries (``rows = mentions * beams``).

    Rows ``m * k ... m * k + k - 1`` of the query (the beams of mention ``m``) attend to key
    row ``m``: they are folded into the query-length axis, which leaves every query's result
    unchanged because cross-attention has no causal mask.
    """
    rows, groups = query.shape[0], key.shape[0]
    if rows == groups:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if rows % groups:
        raise ValueError(Errors.E263.format(rows=rows, groups=groups))
    beams = rows // groups
    _, heads, length, dim = query.shape
    folded = query.reshape(groups, beams, heads, length, dim).transpose(1, 2).reshape(groups, heads, beams * length, dim)
    if attention_mask is not None:
        # The mask rows of a mention's beams are identical (HF expands them with repeat_interleave).
        attention_mask = attention_mask[::beams].repeat(1, 1, beams, 1)
    kwargs["is_causal"] = False
    out, _ = sdpa_attention_forward(module, folded, key, value, attention_mask, **kwargs)
    # out: (groups, beams * length, heads, dim) -> (rows, length, heads, dim)
    return out.reshape(groups * beams, length, heads, dim), None


AttentionInterface.register(FOLDED_ATTENTION, beam_folded_attention)


class SharedCrossAttentionCache(EncoderDecoderCache):
    """An encoder-decoder cache whose cross-attention part has one row per mention, not per beam.

    Beam search reorders beams only within a mention, so the (identical) cross-attention rows
    never need to move: only the self-attention cache is reordered.
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


def _cross_attention_modules(model) -> Optional[List[torch.nn.Module]]:
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if not layers:
        return None
    modules = [getattr(layer, "encoder_attn", None) for layer in layers]
    needed = ("k_proj", "v_proj", "head_dim")
    if any(m is None or not all(hasattr(m, a) for a in needed) for m in modules):
        return None
    return modules


def supports_beam_sharing(model) -> bool:
    """BART-family models: ``layers[i].encoder_attn.k_proj`` decoders, ``final_logits_bias``, SDPA/eager.

    ``final_logits_bias`` marks the BART family (BART, mBART, Marian, Pegasus), whose LM head
    is exactly ``output embeddings + final_logits_bias`` (:func:`lm_head_logits` relies on it).
    """
    return (
        getattr(model.config, "is_encoder_decoder", False)
        and model.config._attn_implementation in ("sdpa", "eager")
        and hasattr(model, "final_logits_bias")
        and model.get_output_embeddings() is not None
        and _cross_attention_modules(model) is not None
    )


def lm_head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head of a BART-family model on selected decoder states (same as its ``forward``)."""
    return model.get_output_embeddings()(hidden) + model.final_logits_bias.to(hidden.device)[0]


def prefill_cross_attention(model, encoder_hidden: torch.Tensor) -> SharedCrossAttentionCache:
    """A cache holding every decoder layer's cross-attention keys/values, one row per input."""
    modules = _cross_attention_modules(model)
    if modules is None:
        raise ValueError(Errors.E264)
    cross = DynamicCache()
    rows, length = encoder_hidden.shape[:2]
    for idx, attn in enumerate(modules):
        key = attn.k_proj(encoder_hidden).view(rows, length, -1, attn.head_dim).transpose(1, 2).contiguous()
        value = attn.v_proj(encoder_hidden).view(rows, length, -1, attn.head_dim).transpose(1, 2).contiguous()
        cross.update(key, value, idx)
    cache = SharedCrossAttentionCache(DynamicCache(), cross)
    for idx in range(len(modules)):
        cache.is_updated[idx] = True  # the decoder reuses these instead of projecting again
    return cache


@contextmanager
def folded_attention(model) -> Iterator[None]:
    """Route the model's attention through :func:`beam_folded_attention` for a ``with`` block."""
    config = model.config
    original = config._attn_implementation
    config._attn_implementation = FOLDED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = original


def placeholder_encoder_states(encoder_hidden: torch.Tensor) -> torch.Tensor:
    """A zero-width stand-in for the encoder states once the cross-attention cache is filled.

    ``generate`` expands ``encoder_outputs`` per beam; the decoder only reads their length
    (the keys/values come from the cache), so nothing of size ``hidden`` is copied. A decoder
    that did try to project these would fail loudly on the zero width.
    """
    return encoder_hidden.new_zeros(encoder_hidden.shape[0], encoder_hidden.shape[1], 0)
