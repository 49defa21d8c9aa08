"""Preference pairs as token rows in the linker's exact decoding format, their collator, their log-probs.

Why apart from the trainers: the same rows feed every loss (DPO, pairwise, CPO, SimPO) and the
before/after margins of a run, so what is scored -- the KB name + end-of-name after the
``" mention is"`` prompt, never the prompt -- is defined once, here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from trl.trainer.utils import selective_log_softmax

from spacy_angel.errors import Errors, PreferenceTrainingError
from spacy_angel.linking.linker import AngelLinker
from training.examples.encoding import IGNORE_INDEX, seq2seq_example
from training.examples.pair_files import PreferencePair

ROW_COLUMNS = (
    "prompt_input_ids",
    "chosen_decoder_input_ids",
    "chosen_labels",
    "rejected_decoder_input_ids",
    "rejected_labels",
)


def encode_pairs(linker: AngelLinker, pairs: Sequence[PreferencePair]) -> List[Dict[str, List[int]]]:
    """Token rows for TRL in the linker's exact decoding format (see :func:`seq2seq_example`).

    A pair whose chosen and rejected names are the same token sequence teaches nothing and
    means the pair file is broken, so it is refused with its position and mention.
    """
    rows: List[Dict[str, List[int]]] = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, PreferencePair):
            raise PreferenceTrainingError(Errors.E333.format(i=i, got=type(pair).__name__))
        for field in ("chosen", "rejected"):
            value = getattr(pair, field)
            if not isinstance(value, str) or not value.strip():
                raise PreferenceTrainingError(Errors.E334.format(i=i, doc_id=pair.doc_id, field=field))
        try:
            chosen = seq2seq_example(linker, pair.inputs, pair.chosen)
            rejected = seq2seq_example(linker, pair.inputs, pair.rejected)
        except ValueError as err:
            raise PreferenceTrainingError(Errors.E335.format(i=i, doc_id=pair.doc_id, err=err)) from err
        if chosen["labels"] == rejected["labels"]:
            raise PreferenceTrainingError(
                Errors.E336.format(i=i, doc_id=pair.doc_id, surface=pair.mention.surface, chosen=pair.chosen, rejected=pair.rejected)
            )
        rows.append(
            {
                "prompt_input_ids": chosen["input_ids"],
                "chosen_decoder_input_ids": chosen["decoder_input_ids"],
                "chosen_labels": chosen["labels"],
                "rejected_decoder_input_ids": rejected["decoder_input_ids"],
                "rejected_labels": rejected["labels"],
            }
        )
    return rows


def _pad(seqs: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    for i, seq in enumerate(seqs):
        out[i, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return out


@dataclass
class PairCollator:
    """Right-pads encoder and decoder rows (BART's learned positions count from the left edge).

    TRL's ``DataCollatorForPreference`` left-pads the prompt, which would shift every encoder
    position of a BART model; chosen and rejected decoder rows share one length so the trainers
    can stack them into a single forward pass.
    """

    pad_token_id: int

    def __call__(self, rows: Sequence[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        src = [r["prompt_input_ids"] for r in rows]
        src_len = max(len(s) for s in src)
        dec_len = max(len(r[f"{side}_decoder_input_ids"]) for r in rows for side in ("chosen", "rejected"))
        batch = {
            "prompt_input_ids": _pad(src, self.pad_token_id, src_len),
            "prompt_attention_mask": _pad([[1] * len(s) for s in src], 0, src_len),
        }
        for side in ("chosen", "rejected"):
            dec = [r[f"{side}_decoder_input_ids"] for r in rows]
            batch[f"{side}_decoder_input_ids"] = _pad(dec, self.pad_token_id, dec_len)
            batch[f"{side}_decoder_attention_mask"] = _pad([[1] * len(d) for d in dec], 0, dec_len)
            batch[f"{side}_labels"] = _pad([r[f"{side}_labels"] for r in rows], IGNORE_INDEX, dec_len)
        return batch


def sequence_logps(
    model: torch.nn.Module, batch: Dict[str, torch.Tensor], with_nll: bool = False
) -> Dict[str, torch.Tensor]:
    """Summed log-probs of chosen and rejected name + end-of-name tokens, in one forward pass.

    Rows ``[:n]`` are chosen and ``[n:]`` rejected; only positions whose label is not -100 (the
    name and end-of-name, never the ``mention is`` prompt) are counted, which is exactly what
    the linker's teacher-forced rescoring sums before length normalisation. ``with_nll`` adds
    the token-mean NLL of the chosen names (CPO's and RPO's extra term).
    """
    n = batch["prompt_input_ids"].shape[0]
    enc = batch["prompt_input_ids"]
    enc_mask = batch["prompt_attention_mask"]
    labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]], dim=0)
    outputs = model(
        input_ids=torch.cat([enc, enc], dim=0),
        attention_mask=torch.cat([enc_mask, enc_mask], dim=0),
        decoder_input_ids=torch.cat([batch["chosen_decoder_input_ids"], batch["rejected_decoder_input_ids"]], dim=0),
        decoder_attention_mask=torch.cat(
            [batch["chosen_decoder_attention_mask"], batch["rejected_decoder_attention_mask"]], dim=0
        ),
        use_cache=False,
    )
    logits = outputs.logits
    mask = labels != IGNORE_INDEX
    per_token = selective_log_softmax(logits, labels.masked_fill(~mask, 0))
    per_token = per_token.masked_fill(~mask, 0.0)
    logps = per_token.sum(-1)
    lengths = mask.sum(-1)
    out = {
        "chosen_logps": logps[:n],
        "rejected_logps": logps[n:],
        "chosen_lengths": lengths[:n],
        "rejected_lengths": lengths[n:],
        "mean_chosen_logits": logits[:n][mask[:n]].detach().mean(),
        "mean_rejected_logits": logits[n:][mask[n:]].detach().mean(),
    }
    if with_nll:
        out["nll_loss"] = F.cross_entropy(logits[:n].flatten(0, 1), labels[:n].flatten(), ignore_index=IGNORE_INDEX)
    return out


@torch.no_grad()
def pair_logps(
    model: torch.nn.Module, rows: Sequence[Dict[str, List[int]]], pad_token_id: int, batch_size: int = 64
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed log-probs of :func:`encode_pairs` rows under ``model`` (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    collate = PairCollator(pad_token_id)
    device = next(model.parameters()).device
    chosen, rejected = [], []
    try:
        for lo in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[lo : lo + batch_size]).items()}
            out = sequence_logps(model, batch)
            chosen.append(out["chosen_logps"].float().cpu())
            rejected.append(out["rejected_logps"].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)
