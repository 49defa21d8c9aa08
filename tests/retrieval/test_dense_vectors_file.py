"""The dense name vectors are written into a cache folder once and memory-mapped after (issue 27: arrays on
disk, mapped, shared between workers): the mapped vectors link exactly as freshly encoded ones; each KB and
encoder has its own file; a file written for another KB or encoder, or a broken one, is encoded again and
replaced; a folder that cannot be written only loses the file; the linker's folder is the user's cache."""
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


def test_another_kb_or_encoder_gets_its_own_file_and_a_foreign_file_is_encoded_again(kb, tmp_path, caplog):
    encoder = _encoder(kb)
    name_vectors(kb, encoder, tmp_path)
    (path,) = tmp_path.glob("dense-names-*.safetensors")
    assert kb.fingerprint()[:16] in path.name  # one cache folder serves many KBs
    grown = kb_from({**TINY_CONCEPTS, "D000001": ["a new disease"]})
    vectors = name_vectors(grown, encoder, tmp_path)
    assert vectors.shape[0] == grown.num_names and len(list(tmp_path.glob("dense-names-*.safetensors"))) == 2
    other = _encoder(kb, seed=1)
    name_vectors(kb, other, tmp_path)
    assert len(list(tmp_path.glob("dense-names-*.safetensors"))) == 3  # one file per KB and encoder
    # a file under this KB's name but written for another KB (copied, or a hash prefix shared): encoded again
    (grown_path,) = [p for p in tmp_path.glob(f"dense-names-{grown.fingerprint()[:16]}-*")]
    path.write_bytes(grown_path.read_bytes())
    with caplog.at_level(logging.WARNING):
        again = name_vectors(kb, encoder, tmp_path)
    assert "[W004]" in caplog.text
    np.testing.assert_array_equal(np.asarray(again), encoder.encode(list(kb.names), normalized=True))


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


def test_the_linker_maps_the_vectors_from_the_users_cache(kb, tmp_path, monkeypatch):
    """A hybrid linker's dense index: encoded on the first load, mapped from $SPACY_ANGEL_CACHE/dense-names
    on the next (read-only, the same vectors); SPACY_ANGEL_CACHE=off keeps them in memory and writes nothing."""
    from spacy_angel.linking.linker import AngelLinker
    from spacy_angel.retrieval.dense_index import default_vectors_dir

    encoder = _encoder(kb)
    monkeypatch.setenv("SPACY_ANGEL_CACHE", str(tmp_path / "cache"))
    assert default_vectors_dir() == tmp_path / "cache" / "dense-names"

    def dense_of_a_new_linker():
        linker = AngelLinker.__new__(AngelLinker)  # only the parts the dense index reads
        linker.kb, linker.name_encoder, linker._dense_index = kb, encoder, None
        return linker.dense_index

    first = dense_of_a_new_linker()
    assert first.vectors.flags.writeable and len(list((tmp_path / "cache" / "dense-names").iterdir())) == 1
    second = dense_of_a_new_linker()
    assert not second.vectors.flags.writeable
    np.testing.assert_array_equal(np.asarray(second.vectors), first.vectors)
    monkeypatch.setenv("SPACY_ANGEL_CACHE", "off")
    assert default_vectors_dir() is None
    off = dense_of_a_new_linker()
    assert off.vectors.flags.writeable
    np.testing.assert_array_equal(off.vectors, first.vectors)
