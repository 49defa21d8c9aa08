"""The dense name encoder: it learns how a KB's names vary from its synonym sets (a held-out synonym
TF-IDF gets wrong is found), trains to the same weights twice, saves without pickle, refuses broken files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spacy_angel.errors import NameIndexError
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.dense_index import DenseNameIndex
from spacy_angel.retrieval.name_encoder import ENCODER_ARRAYS, ENCODER_CONFIG, NameEncoder, NameFeatures
from spacy_angel.retrieval.tfidf import NameIndex
from training.settings import NameEncoderSettings
from training.stages.name_encoder import synonym_sets, train_name_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEMS = ["abd", "bex", "cor", "dun", "efo", "fim", "gal", "hup", "ixo", "jat", "kel", "lom", "mip", "nar", "oku",
         "pev", "qis", "rud", "sal", "tov", "ulm", "vak", "wez", "xon", "yib", "zur", "alp", "bru", "cex", "dov"]
HELD = STEMS[:6]  # their "renal" synonym is held out: only "<stem> kidney dz" is left in the KB
SETTINGS = NameEncoderSettings(steps=150, batch_size=16, dim=32, progress=False)


def _kidney_kb() -> KnowledgeBase:
    """Concepts named "<stem> kidney dz" / "<stem> renal dz", and for the held-out stems a concept
    "<stem> renal ca": the KB teaches renal = kidney through 24 concepts, while TF-IDF, which sees
    five 3-grams of "renal" shared against two of "dz", prefers the other concept."""
    kb = KnowledgeBase()
    for i, stem in enumerate(STEMS):
        kb.add(f"C{i}", f"{stem} kidney dz")
        if stem not in HELD:
            kb.add(f"C{i}", f"{stem} renal dz")
        else:
            kb.add(f"D{i}", f"{stem} renal ca")
    kb.add("R", "renal failure")
    kb.add("R", "renal insufficiency")
    return kb


@pytest.fixture(scope="module")
def trained():
    kb = _kidney_kb()
    encoder, log = train_name_encoder(kb, SETTINGS)
    return kb, encoder, log


def test_a_held_out_synonym_tfidf_misses_is_found_by_what_the_synonym_sets_teach(trained):
    kb, encoder, log = trained
    queries = [f"{stem} renal dz" for stem in HELD]
    gold = [f"C{STEMS.index(stem)}" for stem in HELD]
    tfidf = [c[0].kb_ids[0] for c in NameIndex(kb).fit().link(queries, k=1)]
    dense = [c[0].kb_ids[0] for c in DenseNameIndex(kb, encoder).link(queries, k=1)]
    untrained = NameEncoder(encoder.features, np.random.default_rng(0).normal(size=encoder.projection.shape).astype(np.float32))
    before = [c[0].kb_ids[0] for c in DenseNameIndex(kb, untrained).link(queries, k=1)]
    assert sum(a == b for a, b in zip(tfidf, gold)) <= 1  # the lookup takes the cyst
    assert sum(a == b for a, b in zip(before, gold)) <= 2  # a random projection knows nothing of renal = kidney
    assert sum(a == b for a, b in zip(dense, gold)) >= 5
    assert log["steps_done"] == 150 and log["synonym_sets"] == len(STEMS) - len(HELD) + 1 and log["safety_cap"] is None


def test_training_twice_gives_the_same_encoder(trained):
    kb, encoder, _ = trained
    again, _ = train_name_encoder(kb, SETTINGS)
    assert np.array_equal(again.projection, encoder.projection)


def test_synonym_sets_are_the_concepts_with_two_names():
    kb = _kidney_kb()
    texts, sets = synonym_sets(kb)
    assert texts == list(kb.names) and len(sets) == len(STEMS) - len(HELD) + 1 and all(len(s) == 2 for s in sets)
    # annotated mentions join their concept's set: a one-name concept gets one, a new surface is added once
    texts, sets = synonym_sets(kb, [("ABD  Renal DZ", ("C0",)), ("abd renal dz", ("C0",)), ("unknown", ("NOPE",))])
    assert texts == [*kb.names, "abd renal dz"] and sorted([kb.name_index("abd kidney dz"), len(kb.names)]) in sets
    lonely = KnowledgeBase()
    lonely.add("A", "alpha")
    lonely.add("B", "beta")
    with pytest.raises(ValueError, match="E457"):
        train_name_encoder(lonely, SETTINGS)


def test_save_and_load_encode_alike_and_broken_files_are_refused_by_name(trained, tmp_path):
    kb, encoder, _ = trained
    encoder.to_disk(tmp_path / "enc")
    loaded = NameEncoder.from_disk(tmp_path / "enc")
    texts = ["abd renal dz", "Kidney DZ", "something unseen entirely"]
    assert np.array_equal(loaded.encode(texts), encoder.encode(texts))
    assert np.allclose(np.linalg.norm(loaded.encode(texts[:2]), axis=1), 1.0, atol=1e-5)
    assert not (tmp_path / "enc" / "encoder.pkl").exists() and sorted(p.name for p in (tmp_path / "enc").iterdir()) == [
        ENCODER_CONFIG, ENCODER_ARRAYS]

    arrays = tmp_path / "enc" / ENCODER_ARRAYS
    arrays.write_bytes(arrays.read_bytes()[:-100])  # cut short
    with pytest.raises(NameIndexError, match=r"E456.*enc.*truncated"):
        NameEncoder.from_disk(tmp_path / "enc")
    encoder.to_disk(tmp_path / "other")
    (tmp_path / "other" / ENCODER_ARRAYS).replace(arrays)  # arrays of another save beside this config
    with pytest.raises(NameIndexError, match="E454"):
        NameEncoder.from_disk(tmp_path / "enc")
    config = json.loads((tmp_path / "other" / ENCODER_CONFIG).read_text())
    (tmp_path / "other" / ENCODER_CONFIG).write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(NameIndexError, match="E452"):
        NameEncoder.from_disk(tmp_path / "other")
    with pytest.raises(ValueError, match="E451"):
        NameEncoder(encoder.features, np.zeros((3, 4), np.float32))


def test_dense_search_matches_a_full_sort_across_name_blocks(trained):
    kb, encoder, _ = trained
    index = DenseNameIndex(kb, encoder, name_chunk_size=7)  # many blocks: the running top-k merges them
    queries = ["abd renal dz", "renal", "zz top"]
    hits = index.nearest_names(queries, 5)
    sims = encoder.encode(queries) @ index.vectors.T
    for row, sim in zip(hits, sims):
        order = sorted(range(len(sim)), key=lambda i: (-sim[i], i))[:5]
        assert [i for i, _ in row] == order
        assert np.allclose([s for _, s in row], sim[order], atol=1e-6)
    cos = index.cosine(queries, [[0, 3], [], [5]])
    assert np.allclose(cos[0], sims[0][[0, 3]], atol=1e-6) and len(cos[1]) == 0
    with pytest.raises(IndexError):
        index.cosine(["x"], [[kb.num_names]])


def test_features_need_names():
    with pytest.raises(ValueError, match="E450"):
        NameFeatures.fit([])
