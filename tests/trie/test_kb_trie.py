"""Tries know the KB and tokenizer they were built for: a mismatch is refused with a message that
names both fingerprints and the way out, and a directory's own stale trie is rebuilt (loudly
when it belongs to another tokenizer)."""
from __future__ import annotations

import logging

import pytest

from spacy_angel.errors import LinkerError
from spacy_angel.seq2seq.loading import load_model_and_tokenizer
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.seq2seq.offline_init import train_tokenizer
from spacy_angel.trie.kb_trie import build_trie, check_trie, load_or_build_trie, tokenizer_fingerprint


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_model_and_tokenizer(tiny_model_dir, device="cpu")[1]


@pytest.fixture(scope="module")
def other_tok(tiny_kb):
    other = KnowledgeBase()
    for name in ["glorp syndrome", "blorx disease", "zint fever"]:
        other.add("X" + name[:2], name)
    return train_tokenizer(other, vocab_size=300)


def test_trie_records_what_it_was_built_for(tiny_kb, tok):
    trie = build_trie(tiny_kb, tok)
    assert trie.meta["kb_fingerprint"] == tiny_kb.fingerprint()
    assert trie.meta["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
    assert trie.meta["tokenizer_name"] == tok.name_or_path
    check_trie(trie, tiny_kb, tok)  # fits: no error


def test_other_tokenizer_is_refused_with_both_fingerprints_and_the_fix(tmp_path, tiny_kb, tok, other_tok):
    foreign = build_trie(tiny_kb, other_tok)
    with pytest.raises(LinkerError) as err:
        check_trie(foreign, tiny_kb, tok, where=tmp_path / "trie")
    message = str(err.value)
    assert message.startswith("[E021]") and "different tokenizer" in message
    assert tokenizer_fingerprint(other_tok)[:12] in message and tokenizer_fingerprint(tok)[:12] in message
    assert repr(tok.name_or_path) in message
    assert "spacy-angel kb build" in message and str(tmp_path / "trie") in message


def test_other_kb_is_refused(tiny_kb, tok):
    small = KnowledgeBase()
    small.add("D1", "breast cancer")
    with pytest.raises(LinkerError, match=r"\[E022\] .*different KB"):
        check_trie(build_trie(small, tok), tiny_kb, tok)


def test_directory_trie_of_another_tokenizer_is_rebuilt_with_a_warning(tmp_path, tiny_kb, tok, other_tok, caplog):
    path = tmp_path / "trie"
    build_trie(tiny_kb, other_tok).to_disk(path)
    with caplog.at_level(logging.INFO, logger="spacy_angel.trie.kb_trie"):
        rebuilt = load_or_build_trie(tiny_kb, tok, path)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "E021" in warnings[0].getMessage() and "rebuilding" in warnings[0].getMessage()
    assert rebuilt.meta["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spacy_angel.trie.kb_trie"):
        assert load_or_build_trie(tiny_kb, tok, path).meta == rebuilt.meta  # saved: loads silently now
    assert not caplog.records


def test_directory_trie_of_an_older_kb_is_rebuilt_quietly(tmp_path, tiny_kb, tok, caplog):
    small = KnowledgeBase()
    small.add("D1", "breast cancer")
    path = tmp_path / "trie"
    build_trie(small, tok).to_disk(path)
    with caplog.at_level(logging.INFO, logger="spacy_angel.trie.kb_trie"):
        rebuilt = load_or_build_trie(tiny_kb, tok, path)
    assert rebuilt.num_names == tiny_kb.num_names
    assert [r.levelno for r in caplog.records] == [logging.INFO]
