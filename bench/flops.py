"""FLOP account of linking: what each mode spends per mention, and the machine's matmul peak.

The physical-limit ratio of docs/performance.md: achieved FLOP/s (FLOPs per mention x
mentions/s) over the dense float32 matmul peak that torch reaches on this machine with the
same thread count. FLOPs are counted, not estimated: forward hooks on every ``nn.Linear``
(2 x rows x in x out) sorted into encoder / decoder layers / output projection by the module
they belong to, and ``scaled_dot_product_attention`` calls (4 x batch x heads x queries x keys
x head dim) for attention. Norms, activations, softmax and the trie mask are left out (a few
percent), so the fractions are slight overestimates of the useful work.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Sequence, Tuple

import torch

CATEGORIES = ("encoder", "decoder_layers", "output_projection", "attention")
#: (rows, inner, cols): a square matmul, and the linker's own shapes (a decoder step over
#: 32 inputs x 5 beams through fc1, the output projection over 8k tokens, an encoder batch)
PEAK_SHAPES: Sequence[Tuple[int, int, int]] = ((1024, 1024, 1024), (160, 256, 1024), (160, 256, 8000), (4000, 256, 1024))


def matmul_peak(repeats: int = 5, min_seconds: float = 0.2) -> Dict[str, float]:
    """GFLOP/s of float32 ``torch.mm`` per shape (median of ``repeats``), plus ``peak`` (the best)."""
    out: Dict[str, float] = {}
    for m, k, n in PEAK_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        calls = 1
        while True:  # enough calls per timing to last min_seconds
            t0 = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            if time.perf_counter() - t0 >= min_seconds:
                break
            calls *= 2
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            rates.append(2.0 * m * k * n * calls / (time.perf_counter() - t0) / 1e9)
        out[f"{m}x{k}x{n}"] = sorted(rates)[len(rates) // 2]
    out["peak"] = max(out.values())
    return out


def _category_of(model) -> Dict[int, str]:
    encoder = {id(m) for m in model.get_encoder().modules()}
    head = model.get_output_embeddings()
    cats: Dict[int, str] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            cats[id(module)] = "encoder" if id(module) in encoder else "output_projection" if module is head else "decoder_layers"
    return cats


@contextmanager
def count_flops(model) -> Iterator[Dict[str, float]]:
    """FLOPs spent inside the ``with`` block, by category (the yielded dict fills in as it runs)."""
    counts = {c: 0.0 for c in CATEGORIES}
    cats = _category_of(model)

    def linear_hook(module, inputs, output) -> None:
        rows = inputs[0].numel() // module.in_features
        counts[cats[id(module)]] += 2.0 * rows * module.in_features * module.out_features

    original = torch.nn.functional.scaled_dot_product_attention

    def counted_sdpa(query, key, value, *args, **kwargs):
        *batch, queries, dim = query.shape
        rows = 1
        for size in batch:
            rows *= size
        counts["attention"] += 4.0 * rows * queries * key.shape[-2] * dim
        return original(query, key, value, *args, **kwargs)

    handles = [m.register_forward_hook(linear_hook) for m in model.modules() if id(m) in cats]
    torch.nn.functional.scaled_dot_product_attention = counted_sdpa
    try:
        yield counts
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
        for handle in handles:
            handle.remove()


def flops_per_mention(model, run: Callable[[], object], mentions: int) -> Dict[str, float]:
    """MFLOPs per mention by category (and ``total``) for one call of ``run`` (untimed)."""
    with count_flops(model) as counts:
        run()
    out = {c: v / mentions / 1e6 for c, v in counts.items()}
    out["total"] = sum(out.values())
    return out


def encoder_seconds(linker, mentions: Sequence[object]) -> float:
    """Seconds the encoder alone takes over ``mentions``, batched and sorted as the linker does."""
    todo = sorted({linker.encode(m) for m in mentions}, key=lambda k: (len(k[0]), len(k[1])))
    decoder = linker.decoder
    t0 = time.perf_counter()
    for lo in range(0, len(todo), linker.batch_size):
        padded = decoder.pad_batch(todo[lo : lo + linker.batch_size])
        decoder.encode(padded.input_ids, padded.attention)
    return time.perf_counter() - t0


def peak_fraction(mflops_per_mention: float, mentions_per_s: float, peak_gflops: float) -> float:
    """Achieved FLOP/s as a fraction of the measured matmul peak."""
    return mflops_per_mention * 1e6 * mentions_per_s / (peak_gflops * 1e9)


__all__ = ["CATEGORIES", "count_flops", "encoder_seconds", "flops_per_mention", "matmul_peak", "peak_fraction"]
