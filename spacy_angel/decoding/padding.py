"""Batches of mentions whose decoder prompts differ in length, decoded exactly as one at a time.

Why: the ``mention is`` prompts differ in length, which is why the reference GenBioEL / ANGEL
code decodes one mention at a time. Here sources are right-padded and prompts left-padded
(:func:`pad_batch`), so every prompt ends in the last column and generation continues from the
same step for all rows. Padding is masked with ``decoder_attention_mask``, and BART's learned
decoder positions are shifted per row (:class:`_RowShiftedPositions`), so every row sees
exactly the positions it saw in training. Batched == one at a time is tested in
tests/linking/test_linker.py.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from spacy_angel.errors import Errors

EncodedInput = Tuple[Tuple[int, ...], Tuple[int, ...]]  # (encoder ids, decoder prompt ids)


class PaddedBatch(NamedTuple):
    """A batch as tensors: right-padded sources, left-padded prompts, each prompt's padding."""

    input_ids: torch.Tensor
    attention: torch.Tensor
    prompt: torch.Tensor
    prompt_mask: torch.Tensor
    shift: torch.Tensor

    def rows(self, lo: int, hi: int) -> "PaddedBatch":
        """Rows ``lo:hi``, trimmed to their own longest source and prompt (as if padded alone)."""
        return self.select(slice(lo, hi))

    def select(self, index: Union[slice, torch.Tensor]) -> "PaddedBatch":
        """The rows ``index`` picks (a slice or a tensor of row numbers), trimmed like :meth:`rows`."""
        src_len = int(self.attention[index].sum(dim=1).max())
        cut = int(self.shift[index].min())  # prompt columns that are padding in every kept row
        return PaddedBatch(
            self.input_ids[index][:, :src_len],
            self.attention[index][:, :src_len],
            self.prompt[index][:, cut:],
            self.prompt_mask[index][:, cut:],
            self.shift[index] - cut,
        )


def pad_batch(batch: Sequence[EncodedInput], pad_id: int, device: torch.device) -> PaddedBatch:
    """Right-padded sources, left-padded prompts, and each prompt's padding (its position shift)."""
    n = len(batch)
    src_len = max(len(s) for s, _ in batch)
    prm_len = max(len(p) for _, p in batch)
    input_ids = torch.full((n, src_len), pad_id, dtype=torch.long)
    attention = torch.zeros((n, src_len), dtype=torch.long)
    prompt = torch.full((n, prm_len), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, prm_len), dtype=torch.long)
    shift = torch.zeros(n, dtype=torch.long)
    for i, (src, prm) in enumerate(batch):
        input_ids[i, : len(src)] = torch.tensor(src)
        attention[i, : len(src)] = 1
        prompt[i, prm_len - len(prm) :] = torch.tensor(prm)  # left-padded
        prompt_mask[i, prm_len - len(prm) :] = 1
        shift[i] = prm_len - len(prm)
    return PaddedBatch(input_ids.to(device), attention.to(device), prompt.to(device), prompt_mask.to(device), shift.to(device))


class _RowShiftedPositions:
    """Lets BART's learned decoder positions start at 0 in every left-padded row.

    BART computes decoder positions from one ``cache_position`` shared by the batch; with
    left-padded prompts each row needs ``cache_position - padding``. ``row_shift`` is set per
    pass (one value per batch row, repeated over beams; see :func:`shifted_positions`). The
    embedding module's ``forward`` is patched on the instance rather than wrapped in a new
    module, so the model's parameter names (and hence ``save_pretrained`` / training) are untouched.
    """

    def __init__(self, embed: torch.nn.Module) -> None:
        self.embed = embed
        self.row_shift: Optional[torch.Tensor] = None
        self.token_positions: Optional[torch.Tensor] = None  # (rows, length): set by explicit_positions
        self._original_forward = embed.forward
        embed.forward = self._forward
        embed._angel_row_shift = self

    def _forward(self, input_ids, past_key_values_length: int = 0, position_ids=None):
        if self.token_positions is not None:
            return torch.nn.functional.embedding(self.token_positions + self.embed.offset, self.embed.weight)
        if self.row_shift is None:
            return self._original_forward(input_ids, past_key_values_length, position_ids=position_ids)
        if position_ids is None:
            seq_len = input_ids.shape[1]
            position_ids = torch.arange(past_key_values_length, past_key_values_length + seq_len, device=self.embed.weight.device)
        positions = (position_ids.view(1, -1) - self.row_shift.view(-1, 1)).clamp(min=0)
        return torch.nn.functional.embedding(positions + self.embed.offset, self.embed.weight)


def install_row_shift(model) -> Optional[_RowShiftedPositions]:
    """The model's row shifter (installed once per model); None where positions are relative (T5)."""
    decoder = model.get_decoder()
    embed = getattr(decoder, "embed_positions", None)
    if embed is None or not hasattr(embed, "offset"):
        return None
    existing = getattr(embed, "_angel_row_shift", None)
    return existing if existing is not None else _RowShiftedPositions(embed)


@contextmanager
def shifted_positions(positions: Optional[_RowShiftedPositions], shift: torch.Tensor) -> Iterator[None]:
    """Row-shifted decoder positions for a ``with`` block, then the previous shift again.

    Restoring (not clearing) lets a pass nest another: the prompt pre-fill inside a scoring pass.
    """
    if positions is None:
        yield
        return
    previous = positions.row_shift
    positions.row_shift = shift
    try:
        yield
    finally:
        positions.row_shift = previous


@contextmanager
def explicit_positions(positions: Optional[_RowShiftedPositions], token_positions: torch.Tensor) -> Iterator[None]:
    """Every decoder token at its own position (rows x length) for a ``with`` block.

    For passes whose tokens are not one sequence, e.g. a prefix tree laid out flat
    (:mod:`spacy_angel.decoding.prefix_scoring`), where a token's position is its depth.
    """
    if positions is None:
        raise ValueError(Errors.E265)
    previous = positions.token_positions
    positions.token_positions = token_positions
    try:
        yield
    finally:
        positions.token_positions = previous
