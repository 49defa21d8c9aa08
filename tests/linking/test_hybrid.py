"""Hybrid linking on a tiny untrained model: evidence is what the parts compute, fusion only ranks KB ids,
and ``train fuse`` / ``train evaluate --mode`` carry the weights from dev to test."""
from __future__ import annotations

import json
import math

import pytest

from spacy_angel.retrieval.tfidf import NameIndex
from spacy_angel.errors import LinkerError
from spacy_angel.linking.fusion import FUSION_FILE, FusionWeights
from spacy_angel.linking.linker import AngelLinker
from spacy_angel.types import Mention

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MENTIONS = [
    Mention("d1", "patients with breast cancers were seen", 14, 28, ("D001943",)),
    Mention("d2", "a heart attack in 2001", 2, 14, ("D009203",)),
    Mention.bare("high blood pressure", ("D006973",)),
    Mention.bare("juvenile diabetes", ("D003922",)),
]


@pytest.fixture(scope="module")
def linker(tiny_model_dir, tiny_kb):
    return AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu", mode="hybrid", num_candidates=4, num_beams=3)


def test_hybrid_candidates_are_kb_concepts_with_probabilities(linker, tiny_kb):
    out = linker.link(MENTIONS, top_k=5)
    assert len(out) == len(MENTIONS)
    for cands in out:
        assert cands, "every mention gets candidates"
        ids = [i for c in cands for i in c.kb_ids]
        assert len(ids) == len(set(ids))
        assert all(i in tiny_kb for i in ids)
        assert all(c.name in tiny_kb.names_for(c.kb_ids[0]) for c in cands)
        assert sum(math.exp(c.score) for c in cands) <= 1.0 + 1e-6
        assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)


def test_evidence_is_beam_plus_retrieval_with_the_parts_own_scores(linker, tiny_kb):
    linker.clear_cache()
    evidence = linker.hybrid_evidence(MENTIONS)
    index = NameIndex(tiny_kb).fit()
    encoded = [linker.encode(m) for m in MENTIONS]
    beams = linker.decoder.beam_search(encoded)
    for m, enc, beam, ev in zip(MENTIONS, encoded, beams, evidence):
        retrieved = [i for i, _ in index.nearest_names([m.surface], 4)[0]]
        assert {e.name_idx for e in ev} == {i for i, _ in beam} | set(retrieved)
        by_idx = {e.name_idx: e for e in ev}
        for rank, (idx, score) in enumerate(beam):  # the beam's own scores, ranks kept
            assert by_idx[idx].beam_rank == rank
            assert by_idx[idx].model == pytest.approx(score, abs=1e-5)
        extra = [i for i in retrieved if by_idx[i].beam_rank is None]
        if extra:  # teacher-forced scores of names the beam missed: same quantity as rerank computes
            [scored] = linker.decoder.score_names([enc], [tuple(extra)])
            for idx, score in scored:
                assert by_idx[idx].model == pytest.approx(score, abs=1e-5)
        cos = index.cosine([m.surface], [[e.name_idx for e in ev]])[0]
        for e, c in zip(ev, cos):
            assert e.tfidf == pytest.approx(float(c), abs=1e-5)
            assert e.exact == (tiny_kb.name_index(m.surface) == e.name_idx)


def test_repeated_mentions_are_fused_once_into_lists_of_their_own(linker, tiny_kb):
    from spacy_angel.linking.fusion import concept_evidence, fuse

    linker.clear_cache()
    out = linker.link(MENTIONS + MENTIONS[:2], top_k=5)
    evidence = linker.hybrid_evidence(MENTIONS[:2])
    for cands, ev in zip(out[:2], evidence):  # what fusing each mention's evidence gives
        assert cands == fuse(concept_evidence(ev, tiny_kb.ids_for_index), linker.fusion, tiny_kb.names, 5)
    assert out[4:] == out[:2] and out[4] is not out[0]
    out[4].clear()
    assert out[0]  # a caller editing one mention's list leaves the other's


def test_exact_match_wins_with_default_weights(linker):
    [cands] = linker.link([Mention.bare("high blood pressure")], top_k=3)
    assert cands[0].kb_ids == ("D006973",)


def test_modes_and_their_errors(linker):
    beam = linker.link(MENTIONS, top_k=3, mode="beam")
    assert beam == AngelLinker.link(linker, MENTIONS, top_k=3, mode="beam")
    assert linker.link(MENTIONS, top_k=3, mode="rerank")
    with pytest.raises(LinkerError, match="unknown linking mode"):
        linker.link(MENTIONS, mode="bm25")


def test_fusion_weights_change_the_ranking(tiny_model_dir, tiny_kb):
    heavy_tfidf = AngelLinker.from_pretrained(
        tiny_model_dir, tiny_kb, device="cpu", mode="hybrid", num_beams=3,
        fusion=FusionWeights(model=0.0, tfidf=1.0, exact=0.0, beam=0.0),
    )
    index = NameIndex(tiny_kb).fit()
    for m, cands in zip(MENTIONS, heavy_tfidf.link(MENTIONS, top_k=1)):
        best = index.link([m.surface], k=1)[0][0]
        assert cands[0].kb_ids == best.kb_ids


def _write_dev(path):
    rows = [("D001943", "breast cancer", "breast cancers"), ("D009203", "heart attack", "heart attacks"),
            ("D006973", "hypertension", "high blood pressure"), ("D003922", "juvenile diabetes", "juvenile diabetes"),
            ("D008175", "lung cancer", "cancer of the lung"), ("D008881", "migraine", "migraines")]
    path.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows), encoding="utf-8")


def test_train_fuse_then_evaluate_hybrid(tmp_path, tiny_model_dir, tiny_kb_dir):
    import shutil

    from typer.testing import CliRunner

    from training.cli import app

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    dev = tmp_path / "dev.txt"
    _write_dev(dev)
    runner = CliRunner()
    res = runner.invoke(app, ["fuse", str(model), str(tiny_kb_dir), str(dev), "--corpus-format", "askapatient",
                              "--num-beams", "3", "--top-k", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    weights = FusionWeights.from_disk(model / FUSION_FILE)
    # an untrained model's scores add nothing on dev: the weights are TF-IDF's alone (fit_fusion's rule)
    assert weights.source == "tfidf-only" and weights.dev["n"] == 6
    assert "hybrid" in res.output
    out = tmp_path / "report.json"
    res = runner.invoke(app, ["evaluate", str(model), str(tiny_kb_dir), str(dev), "--corpus-format", "askapatient",
                              "--num-beams", "3", "--top-k", "3", "--device", "cpu", "-o", str(out)])
    assert res.exit_code == 0, res.output
    meta = json.loads(out.read_text())["meta"]
    assert meta["mode"] == "hybrid" and meta["fusion"]["tfidf"] == weights.tfidf


def _pipeline(model, kb, **config):
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "D", "pattern": p} for p in ("breast cancers", "heart attack", "migraines")])
    nlp.add_pipe("angel_linker", config={"model": str(model), "kb": str(kb), "device": "cpu", "num_beams": 3, "top_k": 3, **config})
    return nlp


def test_component_mode_and_weights_survive_to_disk(tmp_path, tiny_model_dir, tiny_kb_dir):
    import spacy

    weights = {"model": 0.5, "tfidf": 3.0, "exact": 1.0, "beam": 0.25}
    nlp = _pipeline(tiny_model_dir, tiny_kb_dir, mode="hybrid", num_candidates=4, fusion=weights)
    text = "Women with breast cancers had a heart attack and migraines."
    before = [(e.text, e.kb_id_, e._.candidates) for e in nlp(text).ents]
    linker = nlp.get_pipe("angel_linker").linker
    assert linker.mode == "hybrid" and linker.num_candidates == 4 and linker.fusion.tfidf == 3.0
    nlp.to_disk(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "angel_linker" / "fusion").is_file()
    loaded = spacy.load(tmp_path / "pipe")
    again = loaded.get_pipe("angel_linker").linker
    assert again.mode == "hybrid" and again.num_candidates == 4 and again.fusion.vector().tolist() == [0.5, 3.0, 1.0, 0.25, 0.0]
    assert [(e.text, e.kb_id_, e._.candidates) for e in loaded(text).ents] == before


def test_component_reads_the_models_fusion_json(tmp_path, tiny_model_dir, tiny_kb_dir):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    FusionWeights(model=0.0, tfidf=1.0, exact=0.0, beam=0.0, source="fitted").to_disk(model)
    nlp = _pipeline(model, tiny_kb_dir)
    assert nlp.get_pipe("angel_linker").linker.fusion.source == "fitted"
    beam = _pipeline(model, tiny_kb_dir, mode="beam")
    assert beam.get_pipe("angel_linker").linker.mode == "beam"


@pytest.mark.parametrize("config, field", [({"mode": "bm25"}, "mode"), ({"num_candidates": 0}, "num_candidates"),
                                           ({"fusion": {"bm25": 1.0}}, "fusion")])
def test_component_config_errors_name_the_field(tiny_model_dir, tiny_kb_dir, config, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        _pipeline(tiny_model_dir, tiny_kb_dir, **config)


@pytest.mark.parametrize("mode", ["beam", "hybrid", "rerank"])
def test_a_mapped_kb_and_index_give_the_same_links_as_in_memory_ones(tiny_model_dir, tiny_kb_dir, tmp_path, mode):
    """kb.safetensors and tfidf.safetensors memory-mapped (the default for a KB folder) against the same
    folder read into memory: every candidate, id and score equal, in all three modes."""
    import shutil

    from spacy_angel.kb.store import KnowledgeBase

    kb_dir = tmp_path / "kb"
    shutil.copytree(tiny_kb_dir, kb_dir)
    NameIndex(KnowledgeBase.from_disk(kb_dir)).fit().to_disk(kb_dir)
    mapped_kb = KnowledgeBase.from_disk(kb_dir)
    assert mapped_kb._mapped_from == kb_dir
    mapped = AngelLinker.from_pretrained(tiny_model_dir, mapped_kb, device="cpu", num_candidates=4, num_beams=3,
                                         index_dir=kb_dir)
    assert type(mapped.name_index.matrix.data).__name__ == "memmap"
    in_memory_kb = KnowledgeBase.from_disk(kb_dir, mmap=False)
    in_memory = AngelLinker.from_pretrained(tiny_model_dir, in_memory_kb, device="cpu", num_candidates=4,
                                            num_beams=3, name_index=NameIndex.from_disk(kb_dir, in_memory_kb, mmap=False))
    got, want = mapped.link(MENTIONS, top_k=4, mode=mode), in_memory.link(MENTIONS, top_k=4, mode=mode)
    assert [[(c.kb_ids, c.name, round(c.score, 6)) for c in cands] for cands in got] == \
        [[(c.kb_ids, c.name, round(c.score, 6)) for c in cands] for cands in want]
    assert any(got)


@pytest.fixture(scope="module")
def encoder_model_dir(tiny_model_dir, tiny_kb, tmp_path_factory):
    """The tiny model with a dense name encoder trained on the tiny KB's synonym sets beside it."""
    import shutil

    from spacy_angel.retrieval.name_encoder import ENCODER_DIR
    from training.settings import NameEncoderSettings
    from training.stages.name_encoder import train_name_encoder

    model = tmp_path_factory.mktemp("enc") / "model"
    shutil.copytree(tiny_model_dir, model)
    encoder, _ = train_name_encoder(tiny_kb, NameEncoderSettings(steps=30, batch_size=8, dim=16, progress=False))
    encoder.to_disk(model / ENCODER_DIR)
    return model


def test_a_model_with_a_name_encoder_adds_its_candidates_and_cosines(encoder_model_dir, tiny_kb):
    from spacy_angel.retrieval.dense_index import DenseNameIndex

    dense_linker = AngelLinker.from_pretrained(encoder_model_dir, tiny_kb, device="cpu", mode="hybrid", num_candidates=2, num_beams=2)
    assert dense_linker.name_encoder is not None and isinstance(dense_linker.dense_index, DenseNameIndex)
    index = NameIndex(tiny_kb).fit()
    for m, ev in zip(MENTIONS, dense_linker.hybrid_evidence(MENTIONS)):
        got = {e.name_idx for e in ev}
        dense_hits = [i for i, _ in dense_linker.dense_index.nearest_names([m.surface], 2)[0]]
        assert set(dense_hits) <= got and {i for i, _ in index.nearest_names([m.surface], 2)[0]} <= got
        cos = dense_linker.dense_index.cosine([m.surface], [[e.name_idx for e in ev]])[0]
        assert [e.dense for e in ev] == pytest.approx([float(c) for c in cos], abs=1e-6)
        tf = index.cosine([m.surface], [[e.name_idx for e in ev]])[0]
        assert [e.tfidf for e in ev] == pytest.approx([float(c) for c in tf], abs=1e-5)  # dense-only names too
    # a weight on the dense feature alone ranks by the dense cosine
    dense_linker.fusion = FusionWeights(model=0.0, tfidf=0.0, exact=0.0, beam=0.0, dense=10.0)
    dense_linker.clear_cache()
    [cands] = dense_linker.link([Mention.bare("juvenile diabetes")], top_k=1)
    [best] = dense_linker.dense_index.link(["juvenile diabetes"], k=1)
    assert cands[0].kb_ids == best[0].kb_ids


def test_fusion_files_without_the_dense_feature_keep_their_ranking():
    old = FusionWeights.from_dict({"model": 0.5, "tfidf": 4.9, "exact": 1.2, "beam": 1.8})
    assert old.dense == 0.0 and list(old.vector()) == [0.5, 4.9, 1.2, 1.8, 0.0]
