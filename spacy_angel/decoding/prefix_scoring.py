"""Teacher-forced scores of many names per input in one decoder pass over their prefix tree.

Why a room: hybrid linking scores the ~20 TF-IDF names of every mention. Fed one name per
row, every row is padded to the longest name and names that start alike ("breast cancer",
"breast carcinoma", "breast neoplasm") recompute the same decoder states. Here the names of an
input form a token tree; each tree node (a distinct prefix) is one decoder position, which
attends to the prompt and to its own ancestors only (a 4-D mask), at the position its depth
gives. One input is one row, so the cross-attention keys/values are used as prefilled, one row
per input, without folding. The decoder then computes each distinct prefix once.

Scores are the same quantity as :meth:`ConstrainedDecoder._score` (the full-vocabulary
log-softmax of each name token, summed and length-normalised), up to float rounding:
tests/decoding/test_speed_paths.py checks both paths agree and rank the same top-1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from spacy_angel.decoding.beam_sharing import lm_head_logits, placeholder_encoder_states
from spacy_angel.decoding.padding import PaddedBatch, explicit_positions

#: Widest tree of a pass over its narrowest: padding (compute spent on nothing) stays under 1/3
#: of a pass, at a few more passes (hybrid, NCBI test x MEDIC: 1.2, 1.5 and 2.0 within 2%; ungrouped 15% slower).
MAX_WIDTH_RATIO = 1.5


@dataclass
class PrefixTree:
    """The distinct proper prefixes of one input's token sequences (each ending with end-of-name).

    Node 0 is the empty prefix (fed the prompt's last token); node ``j > 0`` is fed its last
    token. ``steps[n]`` lists, for sequence ``n``, the ``(node, next token)`` pairs whose
    log-probabilities sum to its score.
    """

    tokens: List[int]
    parents: List[int]
    depths: List[int]
    steps: List[List[Tuple[int, int]]]

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]], root_token: int) -> "PrefixTree":
        tokens, parents, depths = [root_token], [-1], [0]
        children: Dict[Tuple[int, int], int] = {}
        steps: List[List[Tuple[int, int]]] = []
        for seq in sequences:
            node, path = 0, []
            for pos, token in enumerate(seq):
                path.append((node, int(token)))
                if pos == len(seq) - 1:
                    break  # nothing is predicted after the last token
                key = (node, int(token))
                child = children.get(key)
                if child is None:
                    child = children[key] = len(tokens)
                    tokens.append(int(token))
                    parents.append(node)
                    depths.append(depths[node] + 1)
                node = child
            steps.append(path)
        return cls(tokens, parents, depths, steps)

    def __len__(self) -> int:
        return len(self.tokens)

    def ancestor_mask(self) -> torch.Tensor:
        """``mask[a, b]``: node ``a`` may attend to node ``b`` (``b`` is ``a`` or an ancestor)."""
        size = len(self.tokens)
        mask = torch.eye(size, dtype=torch.bool)
        for node in range(1, size):  # parents come before children, so rows fill in order
            mask[node] |= mask[self.parents[node]]
        return mask


def _tree_mask(trees: Sequence[PrefixTree], prompt_mask: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask (rows, 1, width, prompt - 1 + width): prompt tokens, then ancestors."""
    rows, prompt_keys = prompt_mask.shape[0], prompt_mask.shape[1] - 1
    allowed = torch.zeros(rows, width, prompt_keys + width, dtype=torch.bool)
    allowed[:, :, :prompt_keys] = prompt_mask[:, None, :-1].bool().cpu()
    for row, tree in enumerate(trees):
        size = len(tree)
        allowed[row, :size, prompt_keys : prompt_keys + size] = tree.ancestor_mask()
        allowed[row, size:, prompt_keys + size :] = torch.eye(width - size, dtype=torch.bool)  # padding sees itself
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@torch.inference_mode()
def score_prefix_trees(decoder, padded: PaddedBatch, hidden: torch.Tensor, trees: Sequence[PrefixTree]) -> List[List[float]]:
    """Length-normalised log-probability of every sequence of every input's tree (one decoder pass).

    ``decoder`` is a :class:`~spacy_angel.decoding.decoder.ConstrainedDecoder` on a BART-family model
    with learned positions (``share_beams`` and row-shifted positions available); tree ``i``
    is rooted at row ``i``'s last prompt token.
    """
    model = decoder.model
    device = model.device
    prompt, prompt_mask, shift = padded.prompt, padded.prompt_mask, padded.shift
    width = max(len(tree) for tree in trees)
    ids = torch.full((len(trees), width), decoder.pad_id, dtype=torch.long)
    depth = torch.zeros((len(trees), width), dtype=torch.long)
    for row, tree in enumerate(trees):
        ids[row, : len(tree)] = torch.tensor(tree.tokens)
        depth[row, : len(tree)] = torch.tensor(tree.depths)
    positions = (prompt.shape[1] - 1 + depth.to(device) - shift.view(-1, 1)).clamp(min=0)
    cache = decoder._shared_prefix_cache(padded, hidden, 1)
    mask = _tree_mask(trees, prompt_mask, width, hidden.dtype).to(device)
    with explicit_positions(decoder._positions, positions):
        states = model.get_decoder()(
            input_ids=ids.to(device),
            attention_mask=mask,
            encoder_hidden_states=placeholder_encoder_states(hidden),
            encoder_attention_mask=padded.attention,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
        ).last_hidden_state
    # Only the nodes some step reads reach the LM head; one log-normaliser per node.
    flat_rows: List[int] = []
    flat_tokens: List[int] = []
    for row, tree in enumerate(trees):
        for path in tree.steps:
            for node, token in path:
                flat_rows.append(row * width + node)
                flat_tokens.append(token)
    used, inverse = torch.unique(torch.tensor(flat_rows, device=device), return_inverse=True)
    logits = lm_head_logits(model, states.reshape(-1, states.shape[-1])[used]).float()
    token_logp = logits[inverse, torch.tensor(flat_tokens, device=device)] - torch.logsumexp(logits, dim=-1)[inverse]
    values = token_logp.cpu().tolist()
    out: List[List[float]] = []
    at = 0
    for tree in trees:
        scores = []
        for path in tree.steps:
            total = sum(values[at : at + len(path)])
            at += len(path)
            scores.append(total / float(max(1, len(path))) ** decoder.length_penalty)
        out.append(scores)
    return out


def score_by_prefix_trees(
    decoder, padded: PaddedBatch, hidden: torch.Tensor, name_lists: Sequence[Sequence[int]], tokens: Callable[[int], List[int]]
) -> List[List[Tuple[int, float]]]:
    """(name index, score) per listed name per input, in the order given.

    Inputs are grouped by tree size, since a pass pads its trees to the largest: a pass takes
    trees at most ``MAX_WIDTH_RATIO`` times its smallest and at most ``decoder.score_budget``
    logits (tree nodes x vocabulary). ``tokens(i)`` spells name ``i`` ending with end-of-name.
    """
    roots = padded.prompt[:, -1].tolist()
    trees = {i: PrefixTree.build([tokens(idx) for idx in names], int(roots[i])) for i, names in enumerate(name_lists) if names}
    order = sorted(trees, key=lambda i: len(trees[i]))  # a tree's size: its decoder positions
    vocab = decoder.model.config.vocab_size
    results: List[List[Tuple[int, float]]] = [[] for _ in name_lists]
    lo = 0
    while lo < len(order):
        hi = lo + 1  # sorted ascending: a pass's width is its last tree's size
        while (
            hi < len(order)
            and len(trees[order[hi]]) <= MAX_WIDTH_RATIO * len(trees[order[lo]])
            and (hi + 1 - lo) * len(trees[order[hi]]) * vocab <= decoder.score_budget
        ):
            hi += 1
        rows = order[lo:hi]
        index = torch.tensor(rows, device=padded.input_ids.device)
        sub = padded.select(index)
        sub_hidden = hidden[index][:, : sub.input_ids.shape[1]]
        scores = score_prefix_trees(decoder, sub, sub_hidden, [trees[i] for i in rows])
        for i, row_scores in zip(rows, scores):
            results[i] = list(zip(name_lists[i], row_scores))
        lo = hi
    return results
