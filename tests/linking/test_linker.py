"""AngelLinker on an untrained tiny model: the trie constraint holds, batching changes nothing,
inputs follow the ANGEL format, and bad inputs fail clearly."""
from __future__ import annotations

import shutil

import pytest
import torch

from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.errors import LinkerError
from spacy_angel.seq2seq.loading import load_model_and_tokenizer
from spacy_angel.linking.linker import AngelLinker
from spacy_angel.decoding.decoder import TrieConstraint
from spacy_angel.trie.kb_trie import build_trie, load_or_build_trie
from spacy_angel.seq2seq.prompt import tokenize_name
from spacy_angel.types import Mention

TEXT = (
    "Patients with type 2 diabetes mellitus and high blood pressure were compared with "
    "patients with breast cancer, migraine or cystic fibrosis; heart attack rates differed."
)
SURFACES = ["type 2 diabetes mellitus", "high blood pressure", "breast cancer", "migraine", "cystic fibrosis", "heart attack"]


def mentions_in(text: str, surfaces) -> list:
    out = []
    for s in surfaces:
        start = text.index(s)
        out.append(Mention("doc", text, start, start + len(s)))
    return out


@pytest.fixture(scope="module")
def linker(tiny_model_dir, tiny_kb):
    torch.manual_seed(0)
    # context 32 words a side (the default is 0): the format tests below need context to cut
    return AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu", num_beams=5, batch_size=4, context_window=32)


def check_steps_against_brute_force(monkeypatch, linker, kb) -> dict:
    """Patch the trie constraint so that every decoding step's allowed tokens are compared with a
    brute-force walk over the KB names' token sequences (end-of-name included); counts the rows.

    Every running prefix must be a prefix of some name; a finished name (end-of-name reached, then
    padded with end-of-name by the beam search) may only continue with end-of-name."""
    eos = linker.tokenizer.eos_token_id
    names = [tuple(tokenize_name(linker.tokenizer, name)) + (eos,) for name in kb.names]
    original = TrieConstraint.__call__
    seen = {"rows": 0}

    def checked(self, input_ids, scores):
        masked = original(self, input_ids, scores)
        for row, prefix in enumerate(input_ids[:, self.prompt_length :].tolist()):
            head = tuple(prefix[: prefix.index(eos) + 1]) if eos in prefix else tuple(prefix)
            matching = [seq for seq in names if seq[: len(head)] == head]
            assert matching and set(prefix[len(head) :]) <= {eos}, f"a beam left the trie: {prefix}"
            allowed = {seq[len(head)] for seq in matching if len(seq) > len(head)} or {eos}
            assert set(torch.isfinite(masked[row]).nonzero().flatten().tolist()) == allowed, prefix
            seen["rows"] += 1
        return masked

    monkeypatch.setattr(TrieConstraint, "__call__", checked)
    return seen


def test_untrained_model_only_produces_kb_names(linker, tiny_kb, monkeypatch):
    """Only KB names come out because the constraint allows nothing else, not because the linker
    drops what it produced: every step is checked against a brute-force walk and no beam is dropped."""
    mentions = mentions_in(TEXT, SURFACES) + [Mention.bare("völlig unbekannte krankheit"), Mention.bare("xyz 123")]
    linker.clear_cache()
    linker.decoder.beam_stats.clear()
    steps = check_steps_against_brute_force(monkeypatch, linker, tiny_kb)
    results = linker.link(mentions, top_k=5)
    stats = linker.decoder.beam_stats
    assert stats["not_a_name"] == 0 and stats["infinite"] == 0, stats
    assert stats["kept"] + stats["duplicate"] == len(mentions) * linker.num_beams and steps["rows"] > 0
    assert len(results) == len(mentions)
    kb_names = set(tiny_kb.names)
    for cands in results:
        assert cands, "every mention gets at least one candidate"
        ids_seen = []
        for cand in cands:
            assert cand.name in kb_names
            assert set(cand.kb_ids) <= set(tiny_kb.ids_for(cand.name))
            ids_seen.extend(cand.kb_ids)
        assert len(ids_seen) == len(set(ids_seen)), "ids are de-duplicated in rank order"
        scores = [c.score for c in cands]
        assert scores == sorted(scores, reverse=True)
        assert all(s <= 0.0 for s in scores)


def test_batched_decoding_equals_one_at_a_time(tiny_model_dir, tiny_kb):
    mentions = mentions_in(TEXT, SURFACES) + [Mention.bare("iddm"), Mention.bare("a much longer mention of some disease")]
    batched = AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu", batch_size=8).link(mentions)
    single = AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu", batch_size=1).link(mentions)
    for b, s in zip(batched, single):
        assert [c.name for c in b] == [c.name for c in s]
        assert [c.score for c in b] == pytest.approx([c.score for c in s], abs=1e-4)


def test_scores_are_the_models_log_likelihood(linker):
    """The reported score is the length-normalised teacher-forced log-prob of the name."""
    mention = Mention.bare("breast cancer")
    cand = linker.link([mention], top_k=1)[0][0]
    source, prompt = linker.encode(mention)
    target = linker.tokenizer(" " + cand.name, add_special_tokens=False)["input_ids"] + [linker.tokenizer.eos_token_id]
    dec = torch.tensor([list(prompt) + target[:-1]])
    with torch.no_grad():
        logits = linker.model(input_ids=torch.tensor([source]), decoder_input_ids=dec).logits[0]
    logp = torch.log_softmax(logits[len(prompt) - 1 :], -1).gather(-1, torch.tensor(target)[:, None]).sum().item()
    assert cand.score == pytest.approx(logp / len(target), abs=1e-4)


def test_kb_smaller_than_the_beam(tiny_model_dir):
    kb = KnowledgeBase()
    kb.add("D1", "breast cancer")
    kb.add("D2", "migraine")
    small = AngelLinker.from_pretrained(tiny_model_dir, kb, device="cpu", num_beams=5)
    (cands,) = small.link([Mention.bare("breast tumour")], top_k=5)
    assert 1 <= len(cands) <= 2
    assert {c.name for c in cands} <= {"breast cancer", "migraine"}


def test_input_format_matches_angel(linker):
    text = "Mutations cause Breast Cancer in women"
    mention = Mention("d", text, text.index("Breast"), text.index(" in"))
    assert linker.format_source(mention) == "mutations cause START breast cancer END in women"
    assert linker.format_prompt(mention) == "breast cancer is"
    source, prompt = linker.encode(mention)
    tok = linker.tokenizer
    assert tok.decode(source, skip_special_tokens=True).split() == "mutations cause START breast cancer END in women".split()
    assert source[0] == tok.bos_token_id and source[-1] == tok.eos_token_id
    assert prompt[0] == linker.model.config.decoder_start_token_id
    assert tok.decode(prompt[1:]).split() == ["breast", "cancer", "is"]


def test_the_default_input_is_the_mention_alone(tiny_model_dir, tiny_kb):
    """Context 0 by default: what every recipe here trains on (docs/performance.md, dev trade-off)."""
    default = AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu")
    text = "Mutations cause Breast Cancer in women"
    m = Mention("d", text, text.index("Breast"), text.index(" in"))
    assert default.context_window == 0
    assert default.format_source(m) == "START breast cancer END"


def test_context_window_limits_words(tiny_model_dir, tiny_kb):
    narrow = AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu", context_window=2)
    text = "one two three four breast cancer five six seven"
    m = Mention("d", text, text.index("breast"), text.index(" five"))
    assert narrow.format_source(m) == "three four START breast cancer END five six"


def test_long_span_and_long_context_are_truncated_not_crashing(linker, tiny_kb):
    long_context = "word " * 2000
    text = long_context + "breast cancer " + long_context
    start = text.index("breast cancer")
    mentions = [Mention("d", text, start, start + len("breast cancer")), Mention.bare("cancer " * 900)]
    source, prompt = linker.encode(mentions[0])
    assert len(source) <= linker.max_input_length
    results = linker.link(mentions, top_k=3)
    assert all(c.name in tiny_kb.names for cands in results for c in cands)


def test_non_ascii_and_empty_inputs(linker, tiny_kb):
    assert linker.link([], top_k=5) == []
    results = linker.link([Mention.bare("maladie de huntington — chorée"), Mention.bare("糖尿病"), Mention.bare("")], top_k=2)
    assert len(results) == 3
    assert all(c.name in tiny_kb.names for cands in results for c in cands)


def test_bad_offsets_are_reported(linker):
    with pytest.raises(LinkerError, match="outside its text"):
        linker.link([Mention("doc7", "short", 3, 50)])


def test_identical_inputs_are_decoded_once(tiny_model_dir, tiny_kb, monkeypatch):
    fresh = AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu")
    calls = []
    original = fresh.decoder.beam_search
    monkeypatch.setattr(fresh.decoder, "beam_search", lambda batch: calls.append(len(batch)) or original(batch))
    first = fresh.link([Mention.bare("migraine")] * 5 + [Mention.bare("iddm")])
    assert sum(calls) == 2
    again = fresh.link([Mention.bare("migraine")])
    assert sum(calls) == 2, "cached across calls"
    assert again[0] == first[0]


def test_model_directory_without_tokenizer(tmp_path, tiny_model_dir):
    broken = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_model_dir, broken)
    for f in broken.iterdir():
        if "token" in f.name or f.name in ("vocab.json", "merges.txt"):
            f.unlink()
    with pytest.raises(LinkerError, match="tokenizer"):
        load_model_and_tokenizer(broken, device="cpu")
    with pytest.raises(LinkerError, match="config"):
        load_model_and_tokenizer(tmp_path / "missing", device="cpu")


def test_mismatched_trie_is_refused_and_stale_trie_rebuilt(tmp_path, tiny_model_dir, tiny_kb):
    model, tok = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    other_kb = KnowledgeBase()
    other_kb.add("X1", "breast cancer")
    other_trie = build_trie(other_kb, tok)
    with pytest.raises(LinkerError, match="different KB"):
        AngelLinker(model, tok, tiny_kb, other_trie)
    path = tmp_path / "trie"
    other_trie.to_disk(path)
    rebuilt = load_or_build_trie(tiny_kb, tok, path)  # stale on disk -> rebuilt and saved
    assert rebuilt.num_names == tiny_kb.num_names
    assert load_or_build_trie(tiny_kb, tok, path).meta == rebuilt.meta


def test_trie_extends_with_new_names_without_retraining(tiny_model_dir, tiny_kb):
    kb = KnowledgeBase()
    for cid in tiny_kb.concept_ids:
        for name in tiny_kb.names_for(cid):
            kb.add(cid, name)
    model, tok = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    trie = build_trie(kb, tok)
    kb.add("D999999", "glorp syndrome")
    new_index = kb.name_index("glorp syndrome")
    extended = trie.extend([tok(" glorp syndrome", add_special_tokens=False)["input_ids"]], [new_index])
    assert extended.lookup(tok(" glorp syndrome", add_special_tokens=False)["input_ids"]) == new_index


def test_beam_then_score_encodes_once_and_matches_separate_passes(linker, tiny_kb, monkeypatch):
    """One encoder pass serves beam search and the scoring of extra names, with the same scores
    as two separate passes and as ``rerank``; scores of the beam's names are the beam's own."""
    mentions = mentions_in(TEXT, SURFACES[:4]) + [Mention.bare("iddm")]
    extra_names = [
        ["breast carcinoma", "migraine"],
        ["hypertension"],
        [],
        ["lung cancer", "mammary cancer", "niddm"],
        ["iddm", "juvenile diabetes"],
    ]
    extra = [tuple(tiny_kb.name_index(n) for n in names) for names in extra_names]
    batch = [linker.encode(m) for m in mentions]
    decoder = linker.decoder
    calls = []
    original = decoder.encode
    monkeypatch.setattr(decoder, "encode", lambda *args: calls.append(1) or original(*args))

    ranked, scored = decoder.beam_then_score(batch, lambda beams: extra)
    assert len(calls) == 1, "beam search and scoring share one encoder pass"
    separate_ranked, separate_scored = decoder.beam_search(batch), decoder.score_names(batch, extra)
    assert len(calls) == 3
    for a, b in zip(ranked, separate_ranked):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-6)
    for names, a, b in zip(extra, scored, separate_scored):
        assert [i for i, _ in a] == [i for i, _ in b] == list(names)
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-6)

    # the rerank path gives each surviving name the same score
    for cands, row in zip(linker.rerank(mentions, extra_names, top_k=10), scored):
        by_name = {tiny_kb.names[i]: s for i, s in row}
        for cand in cands:
            assert cand.score == pytest.approx(by_name[cand.name], abs=1e-5)

    # a precomputed encoder output is reused as is; teacher-forced scores of the beam's own names
    # equal the beam's scores, also when the logits budget forces one input per pass
    padded = decoder.pad_batch(batch)
    hidden = original(padded.input_ids, padded.attention)
    beam_names = [tuple(i for i, _ in r) for r in ranked]
    chunked = AngelLinker(linker.model, linker.tokenizer, tiny_kb, linker.trie, score_budget=1).decoder
    for dec in (decoder, chunked):
        calls.clear()
        rescored = dec.score_names(batch, beam_names, encoded=hidden)
        assert calls == []
        for a, b in zip(ranked, rescored):
            assert [i for i, _ in a] == [i for i, _ in b]
            assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5)
    with pytest.raises(LinkerError, match="E052"):
        decoder.beam_search(batch[:2], encoded=hidden)
