"""Broken files in a saved pipeline: a numbered error with a rebuild hint, or a rebuild from the KB
and the same links; never a traceback from a library and never a wrong link.

Each case copies ``fixtures/pipeline_v0_1`` (saved by the flat layout) and breaks one file.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import pytest
import spacy

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pipeline_v0_1"
TEXT = "Women with breast cancer and lung carcinoma."


def _cut(relative: str, keep: int) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = root / "angel_linker" / relative
        path.write_bytes(path.read_bytes()[:keep])
    return mutate


def _write(relative: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / "angel_linker" / relative).write_bytes(data)


def _kb_version(root: Path) -> None:
    path = root / "angel_linker" / "kb" / "kb.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 0}), encoding="utf-8")


class Broken(NamedTuple):
    id: str
    what: str
    mutate: Callable[[Path], None]
    code: Optional[str]  # the numbered error; None: the file is rebuilt and the links are the intact ones
    hint: str


CASES = [
    Broken("safetensors-cut", "model.safetensors cut short", _cut("model/model.safetensors", 1000), "[E006]", "save the model directory again"),
    Broken("safetensors-foreign", "model.safetensors of zero bytes' worth of header", _write("model/model.safetensors", b"\0" * 5000), "[E006]", "save the model directory again"),
    Broken("tokenizer-cut", "tokenizer.json cut short", _cut("model/tokenizer.json", 500), "[E005]", "save the model directory again"),
    Broken("trie-array-cut", "a trie array (.npy) cut short", _cut("trie/edge_token.npy", 50), None, "rebuilt from the KB (`[W002]` logged)"),
    Broken("trie-array-foreign", "a trie array that is not .npy", _write("trie/first_edge.npy", b"not numpy"), None, "rebuilt from the KB (`[W002]` logged)"),
    Broken("tfidf-cut", "the TF-IDF index (tfidf.npz) cut short", _cut("index/tfidf.npz", 300), None, "refitted from the KB"),
    Broken("fusion-nan", "fusion weights with NaN", _write("fusion", b'{"model": NaN, "tfidf": 1, "exact": 1, "beam": 1}'), "[E252]", "refit with `spacy-angel train fuse`"),
    Broken("fusion-inf", "fusion weights with infinity", _write("fusion", b'{"model": 1, "tfidf": Infinity, "exact": 1, "beam": 1}'), "[E252]", "refit with `spacy-angel train fuse`"),
    Broken("kb-old-format", "a KB folder from an older format version", _kb_version, "[E185]", "rebuild with `spacy-angel kb build`"),
]

#: (fault, surface, outcome, test) rows of docs/reliability.md
FAULTS = [
    (f"broken artefact: {c.what}", "spacy.load(pipeline)", (f"`{c.code}`: {c.hint}" if c.code else c.hint),
     f"test_broken_artefacts.py::test_a_broken_file_is_named_or_rebuilt[{c.id}]")
    for c in CASES
]


def _links(nlp) -> list:
    return [(e.text, e.kb_id_) for e in nlp(TEXT).ents]


@pytest.fixture(scope="module")
def intact_links():
    return _links(spacy.load(FIXTURE))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_broken_file_is_named_or_rebuilt(case: Broken, tmp_path: Path, intact_links, caplog) -> None:
    root = tmp_path / "pipeline"
    shutil.copytree(FIXTURE, root)
    case.mutate(root)
    if case.code is None:
        with caplog.at_level(logging.WARNING):
            assert _links(spacy.load(root)) == intact_links
        if "W002" in case.hint:
            assert any("[W002]" in r.getMessage() for r in caplog.records)
        return
    with pytest.raises(Exception) as err:
        spacy.load(root)
    assert case.code in str(err.value), repr(err.value)
    assert type(err.value).__module__.startswith("spacy_angel"), f"a library's error, not ours: {err.value!r}"
    assert str(root) in str(err.value)
