"""Token-id prefix trie over tokenized KB names, stored as flat NumPy arrays.

Why not a dict of dicts (GENRE, GenBioEL, ANGEL)? A Python dict per node costs hundreds of
bytes; at UMLS scale (about 6M names) such tries take many GB. Here every non-root node has
exactly one incoming edge, and nodes are numbered in edge order, so the whole trie is:

* ``edge_token[e]``: the token on edge ``e``; the child it leads to is node ``e + 1``;
* ``first_edge[n] : first_edge[n + 1]``: the edges leaving node ``n``, sorted by token;
* ``leaf_node`` / ``leaf_name``: the node reached after the end-of-name token, and the KB
  name index it stands for (sorted by node, looked up with a binary search).

That is about 8 bytes a node. The trie is built level by level with ``np.unique`` on
``parent * vocab + token`` keys, which yields edges already sorted by (parent, token):
measured in ``bench/trie_scale.py`` against a dict-of-dicts trie.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from spacy_angel.errors import Errors, TrieError
from spacy_angel.fileio import atomic_directory
from spacy_angel.mapped_arrays import index_dtype

TRIE_FORMAT_VERSION = 1


ROOT = 0


class TokenTrie:
    """Allowed next tokens for any decoded prefix of a tokenized KB name."""

    def __init__(
        self,
        edge_token: np.ndarray,
        first_edge: np.ndarray,
        leaf_node: np.ndarray,
        leaf_name: np.ndarray,
        eos_token_id: int,
        vocab_size: int,
        meta: Optional[dict] = None,
    ) -> None:
        self.edge_token = edge_token
        self.first_edge = first_edge
        self.leaf_node = leaf_node
        self.leaf_name = leaf_name
        self.eos_token_id = int(eos_token_id)
        self.vocab_size = int(vocab_size)
        self.meta = dict(meta or {})

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        sequences: Sequence[Sequence[int]],
        name_ids: Optional[Sequence[int]] = None,
        *,
        eos_token_id: int,
        vocab_size: int,
        meta: Optional[dict] = None,
    ) -> "TokenTrie":
        """Build from token sequences; each gets ``eos_token_id`` appended if it lacks it.

        ``name_ids[i]`` is the KB name index that sequence ``i`` spells (default ``i``).
        Sequences that are identical keep the first name index.
        """
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        flat = np.fromiter(
            (t for s in sequences for t in s), dtype=np.int64, count=int(lengths.sum())
        )
        return cls.build_flat(
            flat, lengths, name_ids, eos_token_id=eos_token_id, vocab_size=vocab_size, meta=meta
        )

    @classmethod
    def build_flat(
        cls,
        flat_tokens: np.ndarray,
        lengths: np.ndarray,
        name_ids: Optional[Sequence[int]] = None,
        *,
        eos_token_id: int,
        vocab_size: int,
        meta: Optional[dict] = None,
    ) -> "TokenTrie":
        """Build from concatenated token ids and per-sequence lengths (memory-lean input)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        n = len(lengths)
        if n == 0:
            raise TrieError(Errors.E025)
        flat_tokens = np.asarray(flat_tokens)
        if flat_tokens.size and flat_tokens.dtype.kind not in "iu":
            raise TrieError(Errors.E026.format(dtype=flat_tokens.dtype))
        if flat_tokens.size and (flat_tokens.min() < 0 or flat_tokens.max() >= vocab_size):
            raise TrieError(Errors.E027.format(vocab_size=vocab_size, low=flat_tokens.min(), high=flat_tokens.max()))
        if int(lengths.sum()) != flat_tokens.size:
            raise TrieError(Errors.E028.format(total=int(lengths.sum()), given=flat_tokens.size))
        # int32 tokens (half the memory of int64) whenever the vocabulary allows; no copy if already so.
        flat_tokens = flat_tokens.astype(np.int32 if vocab_size < 2**31 else np.int64, copy=False)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        # Append the end-of-name token where a sequence does not already end with it.
        ends_with_eos = np.zeros(n, dtype=bool)
        nonempty = lengths > 0
        ends_with_eos[nonempty] = flat_tokens[starts[nonempty] + lengths[nonempty] - 1] == eos_token_id
        full_len = lengths + (~ends_with_eos)
        del ends_with_eos, nonempty
        names = np.arange(n, dtype=np.int64) if name_ids is None else np.asarray(name_ids, dtype=np.int64)
        if len(names) != n:
            raise TrieError(Errors.E029)

        vocab = np.int64(vocab_size)
        token_dtype = np.int32 if vocab_size < 2**31 else np.int64
        # Every token of every sequence makes at most one node, so the node count is bounded by
        # the total length: the edge arrays are allocated once and filled level by level (no
        # per-level lists to concatenate, which used to double the peak memory).
        bound = int(full_len.sum()) + 1
        positions = index_dtype(bound)
        edge_token = np.empty(bound - 1, dtype=token_dtype)
        child_count = np.zeros(bound, dtype=positions)  # children per node
        node_of_seq = np.zeros(n, dtype=np.int64)  # current node of every sequence, level by level
        next_node = 1
        level_lo, level_hi = 0, 1  # node ids created by the previous level (the root at depth 0)
        max_len = int(full_len.max())
        leaf_of_seq = np.full(n, -1, dtype=np.int64)
        active = np.arange(n, dtype=np.int64)  # sequences still longer than the current depth
        for depth in range(max_len):
            active = active[full_len[active] > depth]
            if active.size == 0:
                break
            tok = np.full(active.size, eos_token_id, dtype=np.int64)
            real = lengths[active] > depth
            tok[real] = flat_tokens[starts[active[real]] + depth]
            keys = node_of_seq[active] * vocab + tok
            del tok, real
            # np.unique sorts by (parent, token): edges come out grouped by parent, tokens sorted.
            uniq, inverse = np.unique(keys, return_inverse=True)
            del keys
            edge_token[next_node - 1 : next_node - 1 + uniq.size] = uniq % vocab
            parents = uniq // vocab - level_lo
            child_count[level_lo:level_hi] = np.bincount(parents, minlength=level_hi - level_lo)
            del parents
            node_of_seq[active] = next_node + inverse
            finished = active[full_len[active] == depth + 1]
            leaf_of_seq[finished] = node_of_seq[finished]
            level_lo, level_hi = next_node, next_node + uniq.size
            next_node += uniq.size
            del uniq, inverse, finished
        del node_of_seq, starts, active
        # Edge e leads to node e + 1; the parents of one level are numbered after the previous
        # level's, so edges are globally sorted by parent and first_edge is a cumulative count.
        n_nodes = next_node
        try:
            edge_token.resize(n_nodes - 1, refcheck=False)  # shrink in place (realloc), no copy
        except ValueError:
            edge_token = edge_token[: n_nodes - 1].copy()
        first_edge = np.zeros(n_nodes + 1, dtype=positions)
        np.cumsum(child_count[:n_nodes], out=first_edge[1:])
        del child_count
        # Leaves: keep the first name index for identical sequences.
        order = np.lexsort((np.arange(n), leaf_of_seq))
        leaf_sorted = leaf_of_seq[order]
        keep = np.ones(n, dtype=bool)
        keep[1:] = leaf_sorted[1:] != leaf_sorted[:-1]
        leaf_node = leaf_sorted[keep].astype(positions)
        leaf_name = names[order][keep].astype(index_dtype(int(names.max(initial=0))))
        meta = dict(meta or {})
        meta["max_depth"] = max_len
        return cls(edge_token, first_edge, leaf_node, leaf_name, eos_token_id, vocab_size, meta)

    # ------------------------------------------------------------------ queries
    @property
    def max_depth(self) -> int:
        """Longest name in tokens, end-of-name included (the decoder's step budget)."""
        return int(self.meta.get("max_depth", 64))

    @property
    def num_nodes(self) -> int:
        return int(self.edge_token.size) + 1

    @property
    def num_names(self) -> int:
        return int(self.leaf_node.size)

    @property
    def nbytes(self) -> int:
        return int(self.edge_token.nbytes + self.first_edge.nbytes + self.leaf_node.nbytes + self.leaf_name.nbytes)

    def children(self, node: int) -> np.ndarray:
        """Token ids allowed after ``node`` (sorted)."""
        return self.edge_token[self.first_edge[node] : self.first_edge[node + 1]]

    def child(self, node: int, token: int) -> int:
        """The node reached from ``node`` by ``token``, or -1 if that token is not allowed."""
        if node < 0:
            return -1
        lo, hi = int(self.first_edge[node]), int(self.first_edge[node + 1])
        pos = _position(self.edge_token[lo:hi], token)
        return lo + pos + 1 if pos >= 0 else -1

    def walk(self, tokens: Iterable[int], node: int = ROOT) -> int:
        """Follow ``tokens`` from ``node``; -1 as soon as one is not allowed."""
        for token in tokens:
            node = self.child(node, int(token))
            if node < 0:
                return -1
        return node

    def name_at(self, node: int) -> int:
        """KB name index of a leaf node (reached after end-of-name), else -1."""
        if node < 0:
            return -1
        pos = _position(self.leaf_node, node)
        return int(self.leaf_name[pos]) if pos >= 0 else -1

    def lookup(self, tokens: Sequence[int]) -> int:
        """KB name index spelled by ``tokens`` (with or without the final end-of-name), else -1."""
        tokens = list(tokens)
        if not tokens or tokens[-1] != self.eos_token_id:
            tokens.append(self.eos_token_id)
        return self.name_at(self.walk(tokens))

    def allowed_pairs(self, nodes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(row, token) pairs allowed for a batch of nodes, computed for all rows at once.

        Rows whose node is -1 (off the trie) or a leaf get only end-of-name, so a beam can never
        be left with an empty allowed set (the trap that lets tokens escape HF constraints).
        """
        nodes = np.asarray(nodes, dtype=np.int64)
        valid = nodes >= 0
        safe = np.where(valid, nodes, 0)
        lo = self.first_edge[safe].astype(np.int64)
        hi = self.first_edge[safe + 1].astype(np.int64)
        counts = np.where(valid, hi - lo, 0)
        empty = counts == 0
        rows = np.repeat(np.arange(nodes.size), counts)
        if rows.size:
            starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
            tokens = self.edge_token[np.arange(rows.size) + starts].astype(np.int64)
        else:
            tokens = np.zeros(0, dtype=np.int64)
        if empty.any():
            extra = np.nonzero(empty)[0]
            rows = np.concatenate([rows, extra])
            tokens = np.concatenate([tokens, np.full(extra.size, self.eos_token_id, dtype=np.int64)])
        return rows, tokens

    def sequences(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored name as (flat tokens without end-of-name, lengths, name ids).

        Used to extend the trie: the names are recovered from the arrays, so no copy of the
        tokenized KB has to be kept in memory.
        """
        n_nodes = self.num_nodes
        parent = np.zeros(n_nodes, dtype=np.int64)
        counts = np.diff(self.first_edge.astype(np.int64))
        parent[1:] = np.repeat(np.arange(n_nodes - 1 + 1, dtype=np.int64)[: counts.size], counts)
        token_of = np.zeros(n_nodes, dtype=np.int64)
        token_of[1:] = self.edge_token
        paths: List[np.ndarray] = []
        current = self.leaf_node.astype(np.int64)
        current = parent[current]  # drop the end-of-name edge
        while True:
            alive = current != ROOT
            if not alive.any():
                break
            step = np.where(alive, token_of[current], -1)
            paths.append(step)
            current = np.where(alive, parent[current], ROOT)
        if not paths:
            return np.zeros(0, np.int64), np.zeros(self.num_names, np.int64), self.leaf_name.astype(np.int64)
        matrix = np.stack(paths[::-1], axis=1)  # right-aligned, -1 padding on the left
        lengths = (matrix >= 0).sum(axis=1)
        flat = matrix[matrix >= 0]
        return flat, lengths, self.leaf_name.astype(np.int64)

    def extend(self, sequences: Sequence[Sequence[int]], name_ids: Sequence[int]) -> "TokenTrie":
        """A new trie holding the old names plus ``sequences`` (new KB names, no retraining)."""
        old_flat, old_len, old_names = self.sequences()
        new_len = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        new_flat = np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=int(new_len.sum()))
        return TokenTrie.build_flat(
            np.concatenate([old_flat, new_flat]),
            np.concatenate([old_len, new_len]),
            np.concatenate([old_names, np.asarray(name_ids, dtype=np.int64)]),
            eos_token_id=self.eos_token_id,
            vocab_size=self.vocab_size,
            meta=self.meta,
        )

    # ------------------------------------------------------------------ persistence
    def to_disk(self, path: Union[str, Path]) -> None:
        """Write a directory of ``.npy`` arrays + ``trie.json``, atomically (temp dir + rename)."""
        with atomic_directory(path) as tmp:
            for field in ("edge_token", "first_edge", "leaf_node", "leaf_name"):
                np.save(tmp / f"{field}.npy", getattr(self, field), allow_pickle=False)
            info = {
                "format_version": TRIE_FORMAT_VERSION,
                "eos_token_id": self.eos_token_id,
                "vocab_size": self.vocab_size,
                "num_nodes": self.num_nodes,
                "num_names": self.num_names,
                "meta": self.meta,
            }
            (tmp / "trie.json").write_text(json.dumps(info, indent=2), encoding="utf8")

    @classmethod
    def from_disk(cls, path: Union[str, Path], mmap: bool = False) -> "TokenTrie":
        path = Path(path)
        info_path = path / "trie.json"
        if not info_path.exists():
            raise TrieError(Errors.E030.format(path=path, file=info_path.name))
        try:
            info = json.loads(info_path.read_text(encoding="utf8"))
        except json.JSONDecodeError as err:
            raise TrieError(Errors.E031.format(path=info_path, err=err)) from err
        if info.get("format_version") != TRIE_FORMAT_VERSION:
            raise TrieError(Errors.E032.format(path=info_path, version=info.get("format_version")))
        arrays = {}
        for field in ("edge_token", "first_edge", "leaf_node", "leaf_name"):
            file = path / f"{field}.npy"
            if not file.exists():
                raise TrieError(Errors.E033.format(path=path, file=file.name))
            try:
                arrays[field] = np.load(file, allow_pickle=False, mmap_mode="r" if mmap else None)
            except (ValueError, OSError, EOFError) as err:  # truncated, or not a .npy at all
                raise TrieError(Errors.E035.format(path=file, err=err)) from None
        trie = cls(**arrays, eos_token_id=info["eos_token_id"], vocab_size=info["vocab_size"], meta=info.get("meta"))
        if trie.num_nodes != info.get("num_nodes"):
            raise TrieError(Errors.E034.format(path=path, num_nodes=trie.num_nodes, expected=info.get("num_nodes")))
        return trie


def _position(ascending: np.ndarray, value: int) -> int:
    """Where ``value`` is in the sorted array, or -1. The key is cast to the array's dtype first: given a
    Python int or an int64, NumPy casts the whole array to the key's type on every call (7.4 ms a lookup in
    a 6M-name trie's int32 leaf array, 3 us with the cast: the cause of beam search's slowdown at 6M names)."""
    info = np.iinfo(ascending.dtype)
    if not info.min <= int(value) <= info.max:
        return -1
    pos = int(np.searchsorted(ascending, ascending.dtype.type(value)))
    return pos if pos < ascending.size and ascending[pos] == value else -1
