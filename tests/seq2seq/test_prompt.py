"""The input format is stable: a known mention gives the known encoder / prompt text and ids,
context is cut in words, truncation keeps the mention, and pre-formatted text encodes alike."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from spacy_angel.errors import Errors, LinkerError
from spacy_angel.seq2seq.prompt import (
    PromptFormat,
    mention_of_prompt,
    normalize_text,
    prompt_for,
    split_context,
    tokenize_name,
)
from spacy_angel.types import Mention

TEXT = "Mutations  cause Breast\tCancer in women"
MENTION = Mention("d", TEXT, TEXT.index("Breast"), TEXT.index(" in"))
DECODER_START = 2  # BART's </s>


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def fmt(tok) -> PromptFormat:
    return PromptFormat(tok, DECODER_START, max_input_length=512, context_window=32)


def words(tok, ids) -> list:
    return tok.decode(ids, skip_special_tokens=True).split()


def test_known_mention_gives_the_angel_format(fmt, tok):
    assert fmt.pieces(MENTION) == ("mutations cause", "breast cancer", "in women")
    assert fmt.source_text(MENTION) == "mutations cause START breast cancer END in women"
    assert fmt.prompt_text(MENTION) == "breast cancer is"
    source, prompt = fmt.encode(MENTION)
    assert source[0] == tok.bos_token_id and source[-1] == tok.eos_token_id
    assert words(tok, source) == "mutations cause START breast cancer END in women".split()
    assert list(prompt) == [DECODER_START] + tokenize_name(tok, "breast cancer") + tokenize_name(tok, "is")
    # every piece is tokenized with a leading space, as the trie spells names
    assert fmt.tokenize_name("breast cancer") == tok(" breast cancer", add_special_tokens=False)["input_ids"]


def test_case_whitespace_and_context_window(tok):
    cased = PromptFormat(tok, DECODER_START, lowercase=False, context_window=32)
    assert cased.source_text(MENTION) == "Mutations cause START Breast Cancer END in women"
    assert cased.prompt_text(MENTION) == "Breast Cancer is"
    text = "one two three four breast cancer five six seven"
    m = Mention("d", text, text.index("breast"), text.index(" five"))
    assert PromptFormat(tok, context_window=2).source_text(m) == "three four START breast cancer END five six"
    assert PromptFormat(tok, context_window=0).source_text(m) == "START breast cancer END"
    assert PromptFormat(tok).source_text(Mention.bare("IDDM")) == "START iddm END"


def test_decoder_start_defaults_to_end_of_sequence(tok):
    assert PromptFormat(tok).encode(MENTION)[1][0] == tok.eos_token_id


def test_truncation_keeps_the_mention_and_the_nearest_context(tok):
    fmt = PromptFormat(tok, DECODER_START, max_input_length=24, context_window=32)
    left = " ".join(f"left{i}" for i in range(300))
    right = " ".join(f"right{i}" for i in range(300))
    text = f"{left} breast cancer {right}"
    m = Mention("d", text, text.index("breast"), text.index("breast") + len("breast cancer"))
    source, prompt = fmt.encode(m)
    assert len(source) <= 24
    got = words(tok, source)
    start = got.index("START")
    assert got[start : start + 4] == ["START", "breast", "cancer", "END"]
    assert got[start - 1] == "left299" and got[start + 4] == "right0", "context is cut from the far ends"
    assert start >= 1 and len(got) - start - 4 >= 1, "both sides keep some context"
    assert list(prompt) == [DECODER_START] + tokenize_name(tok, "breast cancer") + tokenize_name(tok, "is")


def test_overlong_mention_and_prompt_are_cut(tok):
    fmt = PromptFormat(tok, DECODER_START, max_input_length=16, max_prompt_length=3, context_window=32)
    source, prompt = fmt.encode(Mention.bare("cancer " * 200))
    assert len(source) <= 16
    assert source[-1] == tok.eos_token_id
    assert list(prompt[-len(tokenize_name(tok, "is")) :]) == tokenize_name(tok, "is"), "the prompt still ends with 'is'"
    assert len(prompt) == 1 + 3 + len(tokenize_name(tok, "is"))


def test_pre_formatted_text_encodes_like_a_mention(fmt, tok):
    source, prompt = fmt.encode(MENTION)
    text_source, text_prompt = fmt.encode_text("Mutations cause START Breast Cancer END in women", "Breast  Cancer is")
    assert tuple(text_source) == source and tuple(text_prompt) == prompt
    assert words(tok, fmt.encode_text("START Migraine END is defined as pain", "migraine is")[0])[:3] == ["START", "migraine", "END"]


def test_text_helpers():
    assert normalize_text("  Breast \n CANCER ") == "breast cancer"
    assert normalize_text("  Breast \n CANCER ", lowercase=False) == "Breast CANCER"
    assert split_context("a b  c MENTION d e", 7, 14, 2) == ("b c", "MENTION", "d e")
    assert split_context("a b c MENTION d e", 6, 13, 0) == ("", "MENTION", "")
    assert prompt_for("breast cancer") == "breast cancer is"
    assert mention_of_prompt(prompt_for("breast cancer")) == "breast cancer"
    assert mention_of_prompt("no suffix") == "no suffix"


def test_bad_offsets_fail_with_a_numbered_message(fmt):
    with pytest.raises(LinkerError, match=r"\[E040\] .*outside its text.*'doc7'"):
        fmt.encode(Mention("doc7", "short", 3, 50))
    assert Errors.E040.startswith("[E040] ")
