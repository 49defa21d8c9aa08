"""TokenTrie: allowed tokens match a brute-force prefix scan, names round-trip, persistence is safe."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from spacy_angel.trie.token_trie import ROOT, TokenTrie, TrieError

EOS = 2


def brute_allowed(sequences, prefix):
    """Tokens that may follow ``prefix`` in any sequence (+ EOS where a name ends there)."""
    out = set()
    for seq in sequences:
        full = list(seq) + [EOS]
        if len(full) > len(prefix) and full[: len(prefix)] == list(prefix):
            out.add(full[len(prefix)])
    return sorted(out)


@pytest.fixture(scope="module")
def random_sequences():
    rng = random.Random(7)
    seqs = set()
    while len(seqs) < 400:
        seqs.add(tuple(rng.randrange(5, 40) for _ in range(rng.randint(1, 6))))
    return sorted(seqs)


def test_allowed_tokens_match_brute_force(random_sequences):
    trie = TokenTrie.build(random_sequences, eos_token_id=EOS, vocab_size=40)
    rng = random.Random(1)
    prefixes = [()] + [seq[: rng.randint(0, len(seq))] for seq in random_sequences[:150]]
    for prefix in prefixes:
        node = trie.walk(prefix)
        assert node >= 0
        assert trie.children(node).tolist() == brute_allowed(random_sequences, prefix)


def test_allowed_pairs_batch_equals_single_rows(random_sequences):
    trie = TokenTrie.build(random_sequences, eos_token_id=EOS, vocab_size=40)
    nodes = np.array([trie.walk(s[:1]) for s in random_sequences[:30]] + [ROOT, -1])
    rows, tokens = trie.allowed_pairs(nodes)
    for r, node in enumerate(nodes):
        got = sorted(tokens[rows == r].tolist())
        expected = trie.children(int(node)).tolist() if node >= 0 else []
        assert got == (expected or [EOS])  # off-trie rows and leaves only get EOS, never nothing


def test_every_name_maps_back_to_its_index(random_sequences):
    trie = TokenTrie.build(random_sequences, eos_token_id=EOS, vocab_size=40)
    for idx, seq in enumerate(random_sequences):
        assert trie.lookup(seq) == idx
        assert trie.lookup(list(seq) + [EOS]) == idx
    assert trie.lookup([39, 39, 39, 39, 39, 39, 39]) == -1
    assert trie.num_names == len(random_sequences)
    assert trie.max_depth == max(len(s) for s in random_sequences) + 1


def test_lookups_take_keys_of_any_integer_type_and_out_of_range_ones(random_sequences):
    """Keys are cast to the arrays' dtypes before the binary search (NumPy would otherwise cast the whole
    array to the key's type on every call): numpy and Python ints alike, and keys beyond the dtype's range
    are simply absent."""
    trie = TokenTrie.build(random_sequences, eos_token_id=EOS, vocab_size=40)
    seq = random_sequences[5]
    node = trie.walk(seq + (EOS,))
    for key in (node, np.int64(node), np.int32(node), np.uint64(node)):
        assert trie.name_at(key) == 5
    first = seq[0]
    for token in (first, np.int64(first), np.uint8(first)):
        assert trie.child(ROOT, token) == trie.walk(seq[:1])
    assert trie.child(ROOT, 2**40) == -1 and trie.child(ROOT, -(2**40)) == -1 and trie.name_at(2**40) == -1


def test_duplicate_sequences_keep_first_name_and_prefix_names_coexist():
    trie = TokenTrie.build([(5, 6), (5, 6), (5,)], eos_token_id=EOS, vocab_size=10)
    assert trie.lookup((5, 6)) == 0
    assert trie.lookup((5,)) == 2
    assert trie.children(trie.walk((5,))).tolist() == [EOS, 6]  # "5" may end or continue


def test_sequences_recovers_names_and_extend_adds_new_ones(random_sequences):
    trie = TokenTrie.build(random_sequences, eos_token_id=EOS, vocab_size=40)
    flat, lengths, names = trie.sequences()
    recovered = {}
    pos = 0
    for length, name in zip(lengths, names):
        recovered[int(name)] = tuple(flat[pos : pos + length].tolist())
        pos += length
    assert recovered == {i: s for i, s in enumerate(random_sequences)}
    new = [(38, 39), (5, 39)]
    bigger = trie.extend(new, [1000, 1001])
    assert bigger.lookup((38, 39)) == 1000 and bigger.lookup((5, 39)) == 1001
    assert all(bigger.lookup(s) == i for i, s in enumerate(random_sequences))


def test_round_trip_and_corruption_errors(tmp_path, random_sequences):
    trie = TokenTrie.build(random_sequences, eos_token_id=EOS, vocab_size=40, meta={"kb_fingerprint": "x"})
    path = tmp_path / "trie"
    trie.to_disk(path)
    loaded = TokenTrie.from_disk(path)
    assert loaded.meta["kb_fingerprint"] == "x"
    for field in ("edge_token", "first_edge", "leaf_node", "leaf_name"):
        assert np.array_equal(getattr(loaded, field), getattr(trie, field))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    with pytest.raises(TrieError, match="trie.json is missing"):
        TokenTrie.from_disk(tmp_path / "nowhere")
    (path / "leaf_name.npy").unlink()
    with pytest.raises(TrieError, match="leaf_name.npy is missing"):
        TokenTrie.from_disk(path)
    trie.to_disk(path)
    info = json.loads((path / "trie.json").read_text())
    info["num_nodes"] += 1
    (path / "trie.json").write_text(json.dumps(info))
    with pytest.raises(TrieError, match="corrupt"):
        TokenTrie.from_disk(path)


def test_memory_is_a_few_bytes_per_node(random_sequences):
    trie = TokenTrie.build(random_sequences, eos_token_id=EOS, vocab_size=40)
    assert trie.nbytes <= 16 * trie.num_nodes + 1024
