"""Every speed path ranks like the plain path on a tiny model: prefix-tree scoring against one
padded row per name, hybrid linking with and without it, and int8 dynamic quantisation within
its documented tolerance (docs/performance.md); an int8 pipeline saves its float32 weights."""
from __future__ import annotations

import pytest
import spacy
import torch

from spacy_angel.retrieval.tfidf import NameIndex
from spacy_angel.errors import LinkerError
from spacy_angel.seq2seq.loading import load_model_and_tokenizer
from spacy_angel.linking.linker import AngelLinker
from spacy_angel.decoding.prefix_scoring import PrefixTree
from spacy_angel.types import Mention

TEXT = "Patients with breast cancer and high blood pressure often report a migraine at night after a heart attack."
SURFACES = ["breast cancer", "high blood pressure", "migraine", "heart attack"]
MENTIONS = [Mention("d", TEXT, TEXT.index(s), TEXT.index(s) + len(s)) for s in SURFACES] + [Mention.bare("iddm")]
# Names sharing prefixes ("breast c...", "type 1/2 diabetes ..."), one name inside another
# ("migraine" / "migraine disorder"), and an input with no names at all.
NAMES = [
    ["breast cancer", "breast carcinoma", "mammary cancer", "lung cancer", "lung carcinoma"],
    ["high blood pressure", "hypertension", "hypotension", "low blood pressure"],
    ["migraine", "migraine disorder", "myocardial infarction"],
    [],
    ["type 1 diabetes mellitus", "type 2 diabetes mellitus", "iddm", "niddm", "insulin dependent diabetes"],
]
#: int8 tolerance on this tiny untrained model: a name's score (mean log-probability per token)
#: moves by at most this much (docs/performance.md states the trained model's Acc@1 change).
INT8_SCORE_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def linker(tiny_model_dir, tiny_kb):
    return AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu", num_beams=5, batch_size=8)


def scores(linker: AngelLinker, kb, prefix_sharing: bool, budget: int = 1 << 22):
    decoder = linker.decoder
    decoder.prefix_sharing, decoder.score_budget = prefix_sharing, budget
    try:
        lists = [[kb.name_index(n) for n in names] for names in NAMES]
        return decoder.score_names([linker.encode(m) for m in MENTIONS], lists)
    finally:
        decoder.prefix_sharing, decoder.score_budget = True, 1 << 22


def test_a_prefix_tree_holds_each_distinct_prefix_once():
    sequences = [[5, 6, 2], [5, 7, 2], [5, 6, 8, 2], [9, 2]]
    tree = PrefixTree.build(sequences, root_token=1)
    # (), (5), (5 6), (5 7), (5 6 8), (9): six decoder positions instead of 13 tokens
    assert len(tree) == 6
    assert tree.tokens == [1, 5, 6, 7, 8, 9]
    assert tree.depths == [0, 1, 2, 2, 3, 1]
    assert tree.steps[2] == [(0, 5), (1, 6), (2, 8), (4, 2)]
    mask = tree.ancestor_mask()
    assert mask[4].nonzero().flatten().tolist() == [0, 1, 2, 4]  # (5 6 8) sees (), (5), (5 6), itself
    assert mask[3].nonzero().flatten().tolist() == [0, 1, 3]  # (5 7) never sees its sibling (5 6)


@pytest.mark.parametrize("budget", [1 << 22, 1])  # 1: every input in a pass of its own
def test_tree_scoring_equals_one_padded_row_per_name(linker, tiny_kb, budget):
    tree = scores(linker, tiny_kb, True, budget)
    plain = scores(linker, tiny_kb, False)
    for names, a, b in zip(NAMES, tree, plain):
        assert [i for i, _ in a] == [i for i, _ in b] == [tiny_kb.name_index(n) for n in names]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5)
        if names:
            assert max(a, key=lambda t: t[1])[0] == max(b, key=lambda t: t[1])[0]


def test_hybrid_links_the_same_with_and_without_the_prefix_tree(linker, tiny_kb):
    linker.name_index = NameIndex(tiny_kb).fit()
    linker.num_candidates = 6
    try:
        results = {}
        for flag in (True, False):
            linker.decoder.prefix_sharing = flag
            linker.clear_cache()
            results[flag] = linker.link(MENTIONS, top_k=5, mode="hybrid")
    finally:
        linker.decoder.prefix_sharing = True
        linker.clear_cache()
    for a, b in zip(results[True], results[False]):
        assert [c.kb_ids for c in a] == [c.kb_ids for c in b]
        assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-5)


def test_int8_quantises_every_linear_layer_and_stays_within_tolerance(linker, tiny_model_dir, tiny_kb):
    q = AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu", dtype="int8", num_beams=5)
    assert not [m for m in q.model.modules() if type(m) is torch.nn.Linear]
    quantised = [m for m in q.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(quantised) == sum(1 for m in linker.model.modules() if type(m) is torch.nn.Linear)
    lists = [[tiny_kb.name_index(n) for n in names] for names in NAMES]
    batch = [linker.encode(m) for m in MENTIONS]
    for a, b in zip(linker.decoder.score_names(batch, lists), q.decoder.score_names(batch, lists)):
        assert [s for _, s in b] == pytest.approx([s for _, s in a], abs=INT8_SCORE_TOLERANCE)
        assert any(abs(x - y) > 0 for (_, x), (_, y) in zip(a, b)) or not a  # it really is another model


def test_int8_runs_on_the_cpu_only(tiny_model_dir):
    with pytest.raises(LinkerError, match=r"\[E008\].*cpu"):
        load_model_and_tokenizer(tiny_model_dir, device="cuda", dtype="int8")


@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_a_reduced_precision_pipeline_saves_float32_weights_and_reloads(tiny_model_dir, tiny_kb_dir, tmp_path, dtype):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns([{"label": "DISEASE", "pattern": s} for s in SURFACES])
    nlp.add_pipe("angel_linker", config={"model": str(tiny_model_dir), "kb": str(tiny_kb_dir), "device": "cpu", "dtype": dtype})
    assert dtype == "int8" or next(nlp.get_pipe("angel_linker").linker.model.parameters()).dtype == torch.bfloat16
    before = [(e.text, e._.cui) for e in nlp(TEXT).ents]
    nlp.to_disk(tmp_path / "pipe")
    saved = (tmp_path / "pipe" / "angel_linker" / "model" / "model.safetensors").read_bytes()
    assert saved == (tiny_model_dir / "model.safetensors").read_bytes()
    again = spacy.load(tmp_path / "pipe")
    assert again.get_pipe("angel_linker").cfg["dtype"] == dtype
    assert [(e.text, e._.cui) for e in again(TEXT).ents] == before


def test_dense_trie_masks_give_the_same_beams(linker, monkeypatch):
    """Every node masked densely (as the root of a UMLS-size trie is) == (row, token) pairs."""
    import spacy_angel.decoding.trie_constraint as trie_constraint

    linker.clear_cache()
    pairs = linker.link(MENTIONS, top_k=5)
    monkeypatch.setattr(trie_constraint, "DENSE_FANOUT", 1)
    linker.clear_cache()
    dense = linker.link(MENTIONS, top_k=5)
    assert linker.trie._dense_masks, "the dense path ran"
    for a, b in zip(pairs, dense):
        assert [(c.kb_ids, c.name) for c in a] == [(c.kb_ids, c.name) for c in b]
        assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-6)
    linker.clear_cache()
