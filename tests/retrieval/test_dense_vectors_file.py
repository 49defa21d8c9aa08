"""The dense name vectors are written beside the KB once and memory-mapped after (issue 27: arrays on disk,
mapped, shared between workers): the mapped vectors link exactly as freshly encoded ones; a file written
for another KB or encoder, or a broken one, is encoded again and replaced; a folder that cannot be
written only loses the file."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import TINY_CONCEPTS, kb_from

from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.dense_index import DenseNameIndex, encoder_fingerprint, name_vectors
from spacy_angel.retrieval.name_encoder import NameEncoder, NameFeatures


def _encoder(kb: KnowledgeBase, seed: int = 0, dim: int = 16) -> NameEncoder:
    features = NameFeatures.fit(list(kb.names))
    return NameEncoder(features, np.random.default_rng(seed).normal(size=(features.size, dim)).astype(np.float32))


@pytest.fixture
def kb() -> KnowledgeBase:
    return kb_from(TINY_CONCEPTS)


def test_the_vectors_are_written_once_then_mapped_and_link_alike(kb, tmp_path):
    encoder = _encoder(kb)
    fresh = DenseNameIndex(kb, encoder)
    first = DenseNameIndex(kb, encoder, cache_dir=tmp_path)
    files = list(tmp_path.glob("dense-names-*.safetensors"))
    assert len(files) == 1 and encoder_fingerprint(encoder)[:16] in files[0].name
    second = DenseNameIndex(kb, encoder, cache_dir=tmp_path)
    assert isinstance(second.vectors.base, (np.memmap, memoryview)) or not second.vectors.flags.owndata
    assert not second.vectors.flags.writeable  # a read-only map of the file, not a copy
    np.testing.assert_array_equal(np.asarray(second.vectors), fresh.vectors)
    queries = ["breast carcinoma", "heart attack", "low blood pressure"]
    assert second.nearest_names(queries, 3) == fresh.nearest_names(queries, 3) == first.nearest_names(queries, 3)
    assert [c.kb_ids for c in second.link(["heart attack"], 2)[0]] == [c.kb_ids for c in fresh.link(["heart attack"], 2)[0]]


def test_another_kb_or_encoder_is_encoded_again(kb, tmp_path, caplog):
    encoder = _encoder(kb)
    name_vectors(kb, encoder, tmp_path)
    (path,) = tmp_path.glob("dense-names-*.safetensors")
    grown = kb_from({**TINY_CONCEPTS, "D000001": ["a new disease"]})
    with caplog.at_level(logging.WARNING):
        vectors = name_vectors(grown, encoder, tmp_path)  # same encoder, same file name, other KB
    assert "[W004]" in caplog.text and vectors.shape[0] == grown.num_names
    np.testing.assert_array_equal(np.asarray(name_vectors(grown, encoder, tmp_path)), encoder.encode(list(grown.names), normalized=True))
    other = _encoder(kb, seed=1)
    name_vectors(kb, other, tmp_path)
    assert len(list(tmp_path.glob("dense-names-*.safetensors"))) == 2  # one file per encoder


def test_a_broken_file_is_replaced(kb, tmp_path, caplog):
    encoder = _encoder(kb)
    name_vectors(kb, encoder, tmp_path)
    (path,) = tmp_path.glob("dense-names-*.safetensors")
    path.write_bytes(path.read_bytes()[:100])  # cut short
    with caplog.at_level(logging.WARNING):
        vectors = name_vectors(kb, encoder, tmp_path)
    assert "[W004]" in caplog.text and str(path) in caplog.text
    np.testing.assert_array_equal(np.asarray(vectors), encoder.encode(list(kb.names), normalized=True))
    assert path.stat().st_size > 100  # written anew


def test_a_folder_that_cannot_be_written_only_loses_the_file(kb, tmp_path, caplog, monkeypatch):
    """A read-only KB folder (an installed package): the write fails, the vectors are used from memory.
    (The failure is injected: the tests may run as root, who writes into read-only folders.)"""
    import spacy_angel.retrieval.dense_index as dense_index

    def refuse(path, *_args, **_kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(dense_index, "write_arrays", refuse)
    encoder = _encoder(kb)
    with caplog.at_level(logging.WARNING):
        vectors = name_vectors(kb, encoder, tmp_path)
    assert "[W004]" in caplog.text and not list(tmp_path.iterdir())
    np.testing.assert_array_equal(vectors, encoder.encode(list(kb.names), normalized=True))
