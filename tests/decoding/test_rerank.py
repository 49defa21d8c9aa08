"""AngelLinker.rerank on the tiny KB: scores are the model's teacher-forced log-likelihoods,
ranking follows them, candidate sources work, bad candidates fail clearly; and the fast
decoding paths (shared cross-attention / prompt, beam-search scores) change no output."""
from __future__ import annotations

import pytest
import torch

from spacy_angel.errors import LinkerError
from spacy_angel.linking.linker import AngelLinker
from spacy_angel.seq2seq.prompt import tokenize_name
from spacy_angel.types import Mention

TEXT = "Patients with breast cancer and high blood pressure often report a migraine at night."


def mention(surface: str) -> Mention:
    start = TEXT.index(surface)
    return Mention("doc1", TEXT, start, start + len(surface))


MENTIONS = [mention("breast cancer"), mention("high blood pressure"), mention("migraine"), Mention.bare("iddm")]
NAMES = [
    ["breast carcinoma", "lung cancer", "migraine", "hypotension"],
    ["hypertension", "hypotension", "low blood pressure"],
    ["migraine disorder", "heart attack"],
    ["type 1 diabetes mellitus", "niddm", "cystic fibrosis", "huntington chorea", "mammary cancer"],
]


@pytest.fixture(scope="module")
def linker(tiny_model_dir, tiny_kb):
    return AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu", num_beams=5, batch_size=4)


def full_model_score(linker: AngelLinker, m: Mention, name: str) -> float:
    """Length-normalised log-prob of `` name </s>`` with one plain forward pass (no cache tricks)."""
    source, prompt = linker.encode(m)
    target = tokenize_name(linker.tokenizer, name) + [linker.tokenizer.eos_token_id]
    with torch.no_grad():
        logits = linker.model(
            input_ids=torch.tensor([source]), decoder_input_ids=torch.tensor([list(prompt) + target[:-1]])
        ).logits[0]
    logp = torch.log_softmax(logits[len(prompt) - 1 :], -1).gather(-1, torch.tensor(target)[:, None]).sum().item()
    return logp / len(target)


def score_via_internal(linker: AngelLinker, m: Mention, names) -> list:
    """The same names through the decoder's ``_score`` directly (one input, one row per name)."""
    eos = linker.tokenizer.eos_token_id
    seqs = [tokenize_name(linker.tokenizer, n) + [eos] for n in names]
    generated = torch.full((len(seqs), max(map(len, seqs))), linker.tokenizer.pad_token_id)
    for i, s in enumerate(seqs):
        generated[i, : len(s)] = torch.tensor(s)
    padded = linker.decoder.pad_batch([linker.encode(m)])
    hidden = linker.decoder.encode(padded.input_ids, padded.attention)
    return linker.decoder._score(padded, hidden, generated, len(seqs)).tolist()


def test_rerank_scores_equal_score_and_the_plain_model(linker):
    for m, names in zip(MENTIONS, NAMES):
        (ranked,) = linker.rerank([m], [names], top_k=10)
        got = {c.name: c.score for c in ranked}
        internal = dict(zip(names, score_via_internal(linker, m, names)))
        for name, score in got.items():
            assert score == pytest.approx(internal[name], abs=1e-5)
            assert score == pytest.approx(full_model_score(linker, m, name), abs=1e-4)


def test_ranking_follows_scores_and_concepts_are_deduplicated(linker, tiny_kb):
    results = linker.rerank(MENTIONS, NAMES, top_k=10)
    for m, names, ranked in zip(MENTIONS, NAMES, results):
        scores = [c.score for c in ranked]
        assert scores == sorted(scores, reverse=True)
        independent = {n: full_model_score(linker, m, n) for n in names}
        best = max(independent, key=independent.get)
        assert ranked[0].name == best
        ids = [i for c in ranked for i in c.kb_ids]
        assert len(ids) == len(set(ids))
        # One entry per concept: the best-scoring name of each concept among the candidates.
        concepts = {tiny_kb.ids_for(n)[0] for n in names}
        assert len(ranked) == len(concepts)
    # "hypotension" and "low blood pressure" are one concept: only the better one survives.
    second = {c.name for c in results[1]}
    assert len(second & {"hypotension", "low blood pressure"}) == 1


def test_top_k_truncates(linker):
    (ranked,) = linker.rerank([MENTIONS[3]], [NAMES[3]], top_k=2)
    assert len(ranked) == 2


def test_names_outside_the_kb_are_rejected(linker):
    with pytest.raises(LinkerError, match=r"'glorp syndrome'.*mention 1"):
        linker.rerank(MENTIONS[:2], [["breast cancer"], ["hypertension", "glorp syndrome"]])
    with pytest.raises(LinkerError, match="candidate lists for 2 mentions"):
        linker.rerank(MENTIONS[:2], [["breast cancer"]])
    with pytest.raises(LinkerError, match="list of names"):
        linker.rerank(MENTIONS[:1], ["breast cancer"])
    with pytest.raises(LinkerError, match="unknown candidate source"):
        linker.rerank(MENTIONS[:1], "bm25")


def test_kb_name_normalisation_is_applied(linker):
    (ranked,) = linker.rerank([MENTIONS[0]], [["  Breast   CARCINOMA "]], top_k=1)
    assert ranked[0].name == "breast carcinoma"


def test_trie_candidates_reproduce_link(linker):
    linked = linker.link(MENTIONS, top_k=5)
    reranked = linker.rerank(MENTIONS, "trie", top_k=5)
    for a, b in zip(linked, reranked):
        assert [c.name for c in a] == [c.name for c in b]
        assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-4)


def test_tfidf_candidates_need_an_index_and_use_it(linker, tiny_kb):
    with pytest.raises(LinkerError, match="index="):
        linker.rerank(MENTIONS, "tfidf")
    from spacy_angel.retrieval.tfidf import NameIndex

    index = NameIndex(tiny_kb).fit()
    results = linker.rerank(MENTIONS, "tfidf", top_k=3, num_candidates=4, index=index)
    for m, ranked in zip(MENTIONS, results):
        pool = {tiny_kb.names[i] for i, _ in index.nearest_names([m.surface.lower()], 4)[0]}
        assert ranked and {c.name for c in ranked} <= pool


def test_empty_candidate_lists_and_no_mentions(linker):
    assert linker.rerank([], [], top_k=3) == []
    assert linker.rerank([MENTIONS[0]], [[]], top_k=3) == [[]]


def test_batching_chunking_and_plain_path_give_the_same_scores(tiny_model_dir, tiny_kb, linker):
    reference = linker.rerank(MENTIONS, NAMES, top_k=10)
    one = AngelLinker(linker.model, linker.tokenizer, tiny_kb, linker.trie, batch_size=1)
    tiny_budget = AngelLinker(linker.model, linker.tokenizer, tiny_kb, linker.trie, batch_size=4, score_budget=1)
    plain = AngelLinker(linker.model, linker.tokenizer, tiny_kb, linker.trie, batch_size=4, share_beams=False)
    for other in (one, tiny_budget, plain):
        for a, b in zip(reference, other.rerank(MENTIONS, NAMES, top_k=10)):
            assert [c.name for c in a] == [c.name for c in b]
            assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-5)


def test_shared_beam_decoding_equals_plain_hf_beam_search(linker, tiny_kb):
    """Beam sharing (cross-attention / prompt once per mention, beam-search scores instead of a
    re-scoring pass) must not change names or scores."""
    assert linker.share_beams
    plain = AngelLinker(linker.model, linker.tokenizer, tiny_kb, linker.trie, batch_size=4, share_beams=False)
    mentions = MENTIONS + [Mention.bare("a much longer mention of some heart disease"), Mention.bare("xyz")]
    linker.clear_cache()
    for a, b in zip(linker.link(mentions, top_k=5), plain.link(mentions, top_k=5)):
        assert [c.name for c in a] == [c.name for c in b]
        assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-5)
