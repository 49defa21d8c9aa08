"""The ANGEL pair rule on hand-made rankings, each ablation, and mining with real rankings."""
from __future__ import annotations

import pytest

from spacy_angel.types import Candidate, Mention
from training.stages.mining import STRATEGIES, closest_gold_names, mine_pairs, select_pairs
from training.evaluation.similarity_bins import NameIndex


def C(name: str, *ids: str) -> Candidate:
    return Candidate(tuple(ids), name, 0.0)


GOLD = ("G",)


def test_misordered_pairs_only_wrong_above_right():
    ranked = [C("w0", "X"), C("r1", "G"), C("w2", "Y"), C("r3", "G")]
    pairs = select_pairs(ranked, GOLD)
    # r1 is beaten by w0; r3 by w0 and w2; the wrong name below a right one (w2 < r1) is no pair
    assert pairs == [("r1", "w0", 1, 0), ("r3", "w0", 3, 0), ("r3", "w2", 3, 2)]


def test_top1_right_is_paired_with_best_wrong():
    ranked = [C("r0", "G"), C("w1", "X"), C("w2", "Y")]
    assert select_pairs(ranked, GOLD) == [("r0", "w1", 0, 1)]
    # plus the misordered pairs of later right names
    ranked = [C("r0", "G"), C("w1", "X"), C("r2", "G")]
    assert select_pairs(ranked, GOLD) == [("r0", "w1", 0, 1), ("r2", "w1", 2, 1)]


def test_all_right_gives_no_pairs():
    assert select_pairs([C("r0", "G"), C("r1", "G")], GOLD) == []
    assert select_pairs([], GOLD, fallback_chosen=["gold name"]) == []


def test_no_right_in_top_k_uses_fallback_one_pair_per_wrong_name():
    ranked = [C("w0", "X"), C("w1", "Y"), C("w2", "Z"), C("w3", "X")]
    pairs = select_pairs(ranked, GOLD, fallback_chosen=["g_a", "g_b", "g_c"])
    assert pairs == [("g_a", "w0", -1, 0), ("g_b", "w1", -1, 1), ("g_c", "w2", -1, 2), ("g_a", "w3", -1, 3)]
    # no fallback names: nothing to prefer, no pairs
    assert select_pairs(ranked, GOLD) == []


def test_composite_gold_any_id_is_right():
    ranked = [C("w0", "X"), C("breast cancer", "D1"), C("ovarian cancer", "D2")]
    pairs = select_pairs(ranked, ("D2", "D1"))
    assert pairs == [("breast cancer", "w0", 1, 0), ("ovarian cancer", "w0", 2, 0)]
    # a name shared by a gold and another concept counts as right
    assert select_pairs([C("shared", "X", "D1"), C("w1", "Y")], ("D1",)) == [("shared", "w1", 0, 1)]


def test_duplicates_in_ranking_and_fallback_are_dropped():
    ranked = [C("w0", "X"), C("w0", "X"), C("r2", "G"), C("r2", "G")]
    assert select_pairs(ranked, GOLD) == [("r2", "w0", 2, 0)]
    pairs = select_pairs([C("w0", "X"), C("w1", "Y")], GOLD, fallback_chosen=["g", "g"])
    assert pairs == [("g", "w0", -1, 0), ("g", "w1", -1, 1)]


def test_canonical_ids_are_compared():
    ranked = [C("w0", "X"), C("r1", "OLD")]
    assert select_pairs(ranked, GOLD) == []  # without canon: OLD is wrong, no right -> no fallback
    canon = {"OLD": "G"}.get
    assert select_pairs(ranked, GOLD, canon=lambda i: canon(i, i)) == [("r1", "w0", 1, 0)]


def test_all_strategy_pairs_every_right_with_every_wrong():
    ranked = [C("r0", "G"), C("w1", "X"), C("r2", "G"), C("w3", "Y")]
    pairs = select_pairs(ranked, GOLD, strategy="all")
    assert sorted(pairs) == sorted(
        [("r0", "w1", 0, 1), ("r0", "w3", 0, 3), ("r2", "w1", 2, 1), ("r2", "w3", 2, 3)]
    )
    angel = select_pairs(ranked, GOLD, strategy="angel")
    assert set(angel) < set(pairs)  # angel keeps (r0,w1) and the misordered (r2,w1) only
    assert set(angel) == {("r0", "w1", 0, 1), ("r2", "w1", 2, 1)}


def test_top10_is_the_angel_rule_on_a_longer_ranking():
    ranked = [C(f"w{i}", "X") for i in range(9)] + [C("r9", "G")]
    pairs = select_pairs(ranked, GOLD, strategy="top10")
    assert pairs == select_pairs(ranked, GOLD, strategy="angel")
    assert len(pairs) == 9 and all(p[0] == "r9" for p in pairs)


def test_tfidf_strategy_pairs_gold_names_with_other_concepts_names():
    ranked = [C("lung carcinoma", "L"), C("breast carcinoma", "B"), C("cancer", "G")]
    pairs = select_pairs(ranked, GOLD, strategy="tfidf", fallback_chosen=["g1", "g2"])
    # a right name in a TF-IDF negative list is never a negative; chosen are always gold names
    assert pairs == [("g1", "lung carcinoma", -1, 0), ("g2", "breast carcinoma", -1, 1)]


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="unknown strategy"):
        select_pairs([], GOLD, strategy="random")


def test_closest_gold_names_prefers_similar_names(tiny_kb):
    index = NameIndex(tiny_kb).fit()
    assert closest_gold_names(index, "breast carcinomas", ["D001943"], k=2) == ["breast carcinoma", "breast cancer"]
    both = closest_gold_names(index, "lung carcinoma", ["D001943", "D008175"], k=2)
    assert both[0] == "lung carcinoma" and len(both) == 2


def _mentions():
    text = "she was diagnosed with breast carcinomas and high blood pressure ."
    out = []
    for surface, cid in (("breast carcinomas", "D001943"), ("high blood pressure", "D006973")):
        s = text.index(surface)
        out.append(Mention("d1", text, s, s + len(surface), (cid,)))
    out.append(Mention.bare("unknown disease", ("D999999",)))  # not in the KB: skipped
    return out


def test_mine_pairs_tfidf_needs_no_model(tiny_kb):
    pairs, stats = mine_pairs("/nonexistent-model", tiny_kb, _mentions(), top_k=3, strategy="tfidf", synonyms_k=2)
    assert stats["mentions"] == 3 and stats["mentions_not_in_kb"] == 1
    by_mention = {}
    for p in pairs:
        by_mention.setdefault(p.mention.surface, []).append(p)
    # one pair per TF-IDF negative (only names with a positive cosine are negatives)
    assert len(by_mention["breast carcinomas"]) == 3
    assert 1 <= len(by_mention["high blood pressure"]) <= 3
    assert stats["pairs_by_kind"] == {"fallback": len(pairs)}
    assert [p.chosen for p in by_mention["breast carcinomas"]] == ["breast carcinoma", "breast cancer", "breast carcinoma"]
    for p in pairs:
        assert p.chosen in tiny_kb.names_for(p.gold_ids[0])
        assert not set(tiny_kb.ids_for(p.rejected)) & set(p.gold_ids)
        assert p.mention.surface in ("breast carcinomas", "high blood pressure")


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "tfidf"])
def test_mine_pairs_with_model_follows_the_rule(tiny_kb, tiny_model_dir, strategy):
    """On real (untrained-model) rankings every pair prefers a gold name over a non-gold one."""
    mentions = _mentions()
    pairs, stats = mine_pairs(tiny_model_dir, tiny_kb, mentions, top_k=4, strategy=strategy, device="cpu")
    assert stats["num_beams"] >= (10 if strategy == "top10" else 4)
    assert stats["right_in_top_k"] + stats["no_right_in_top_k"] == 2
    assert pairs, "an untrained model makes mistakes to mine"
    for p in pairs:
        assert set(tiny_kb.ids_for(p.chosen)) & set(p.gold_ids)
        assert not set(tiny_kb.ids_for(p.rejected)) & set(p.gold_ids)
        if p.chosen_rank >= 0 and strategy != "all":
            assert p.rejected_rank < p.chosen_rank or p.chosen_rank == 0
    assert sum(stats["pairs_by_kind"].values()) == stats["pairs"] == len(pairs)
