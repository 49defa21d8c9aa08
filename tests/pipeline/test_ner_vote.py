"""NER by vote: ``vote_spans``, ``angel_ents_to_spans`` / ``angel_ner_vote``, and ``add_ner_vote`` on
tiny spaCy NER models trained here with different seeds."""
from __future__ import annotations

import random
from pathlib import Path
from typing import List

import pytest
import spacy
from conftest import TINY_NER_TEXTS, TINY_NER_TRAIN
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.training import Example

from spacy_angel.pipeline.ner_vote import SpanKey, add_ner_vote, vote_spans

TEXTS = TINY_NER_TEXTS


def test_majority_and_union() -> None:
    a, b, c = [(0, 2, "D"), (5, 6, "D")], [(0, 2, "D"), (7, 9, "D")], [(0, 2, "D"), (5, 6, "D")]
    assert vote_spans([a, b, c], 2) == [(0, 2, "D"), (5, 6, "D")]
    assert vote_spans([a, b, c], 3) == [(0, 2, "D")]
    assert vote_spans([a, b, c], 1) == [(0, 2, "D"), (5, 6, "D"), (7, 9, "D")]


def test_label_and_boundaries_must_match() -> None:
    assert vote_spans([[(0, 2, "D")], [(0, 2, "C")], [(0, 3, "D")]], 2) == []


def test_overlap_goes_to_more_votes_then_longer() -> None:
    # (0, 3) has 2 votes, (1, 2) has 3: the better-supported span wins even though it is shorter
    groups = [[(0, 3, "D")], [(0, 3, "D")], [(1, 2, "D")], [(1, 2, "D")], [(1, 2, "D")]]
    assert vote_spans(groups, 1) == [(1, 2, "D")]
    # equal votes: the longer span
    assert vote_spans([[(0, 3, "D")], [(1, 2, "D")]], 1) == [(0, 3, "D")]


def test_a_group_votes_once_per_span() -> None:
    assert vote_spans([[(0, 2, "D"), (0, 2, "D")], []], 2) == []


spans = st.tuples(st.integers(0, 12), st.integers(1, 4), st.sampled_from(["D", "C"])).map(
    lambda t: (t[0], t[0] + t[1], t[2]))


@given(st.lists(st.lists(spans, max_size=6), min_size=1, max_size=5), st.integers(1, 5), st.randoms())
@settings(max_examples=200, deadline=None)
def test_vote_properties(groups: List[List[SpanKey]], min_votes: int, rnd: random.Random) -> None:
    voted = vote_spans(groups, min_votes)
    tokens = [i for start, end, _ in voted for i in range(start, end)]
    assert len(tokens) == len(set(tokens))  # no overlaps
    for span in voted:
        assert sum(span in set(group) for group in groups) >= min_votes
    shuffled = list(groups)
    rnd.shuffle(shuffled)
    assert vote_spans(shuffled, min_votes) == voted  # the order of the models does not matter
    # a span with the most votes of all, and no rival of as many votes over its tokens, always wins
    if voted:
        assert max(sum(s in set(g) for g in groups) for s in voted) == max(
            sum(s in set(g) for g in groups) for g in groups for s in g)


def test_rulers_of_any_kind_can_vote() -> None:
    """Any component that writes doc.ents votes: three entity rulers, each followed by a stash."""
    nlp = spacy.blank("en")
    patterns = [["breast cancer", "cystic fibrosis"], ["breast cancer"], ["cystic fibrosis", "lungs"]]
    for number, names in enumerate(patterns):
        ruler = nlp.add_pipe("entity_ruler", name=f"ruler_{number}")
        ruler.add_patterns([{"label": "Disease", "pattern": name} for name in names])
        nlp.add_pipe("angel_ents_to_spans", name=f"stash_{number}", config={"spans_key": f"ruler_{number}"})
    nlp.add_pipe("angel_ner_vote", config={"spans_keys": ["ruler_0", "ruler_1", "ruler_2"], "min_votes": 2})
    doc = nlp("Girls with cystic fibrosis and breast cancer have lungs.")
    assert [e.text for e in doc.ents] == ["cystic fibrosis", "breast cancer"]
    assert [e.text for e in doc.spans["ruler_2"]] == ["cystic fibrosis", "lungs"]


@pytest.mark.parametrize("config, code", [
    ({"spans_keys": [], "min_votes": 1}, "E462"),
    ({"spans_keys": ["a", "a"], "min_votes": 1}, "E462"),
    ({"spans_keys": ["a", "b"], "min_votes": 3}, "E462"),
    ({"spans_keys": ["a"], "min_votes": 0}, "E462"),
])
def test_bad_vote_settings(config: dict, code: str) -> None:
    with pytest.raises(ValueError, match=code):
        spacy.blank("en").add_pipe("angel_ner_vote", config=config)


def test_empty_stash_key_and_missing_group() -> None:
    with pytest.raises(ValueError, match="E461"):
        spacy.blank("en").add_pipe("angel_ents_to_spans", config={"spans_key": ""})
    nlp = spacy.blank("en")
    nlp.add_pipe("angel_ner_vote", config={"spans_keys": ["ner"], "min_votes": 1})
    with pytest.raises(ValueError, match="E463.*angel_ents_to_spans"):
        nlp("no stash in front")


@pytest.mark.parametrize("min_votes", [1, 2, 3])
def test_vote_pipeline_equals_the_vote_of_its_models(tiny_ner_seeds: List[Path], tmp_path, min_votes: int) -> None:
    alone = [[[(e.start, e.end, e.label_) for e in doc.ents] for doc in spacy.load(path).pipe(TEXTS)]
             for path in tiny_ner_seeds]
    # the seeds disagree, and some vote differs from the first model: a vote that passed the first NER through fails
    assert any(vote_spans([model[d] for model in alone], k) != alone[0][d]
               for k in (1, 2, 3) for d in range(len(TEXTS)))
    nlp = spacy.load(tiny_ner_seeds[0])
    add_ner_vote(nlp, [spacy.load(path) for path in tiny_ner_seeds[1:]], min_votes)
    assert nlp.pipe_names == ["tok2vec", "ner", "ner_spans", "ner_1", "ner_1_spans", "ner_2", "ner_2_spans",
                              "angel_ner_vote"]
    expected = [vote_spans([model[d] for model in alone], min_votes) for d in range(len(TEXTS))]
    got = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(TEXTS)]
    assert got == expected
    nlp.to_disk(tmp_path / "voted")
    reloaded = spacy.load(tmp_path / "voted")
    assert [[(e.start, e.end, e.label_) for e in doc.ents] for doc in reloaded.pipe(TEXTS)] == expected
    gold = [Example.from_dict(nlp.make_doc(text), {"entities": [(s, e, "Disease") for s, e in ents]})
            for text, ents in TINY_NER_TRAIN]
    assert "ents_f" in reloaded.evaluate(gold)


def test_vote_pipeline_runs_in_worker_processes(tiny_ner_seeds: List[Path]) -> None:
    """``nlp.pipe(n_process=2)`` ships the span groups and voted entities back like one process does."""
    nlp = spacy.load(tiny_ner_seeds[0])
    add_ner_vote(nlp, [spacy.load(path) for path in tiny_ner_seeds[1:]], 2)
    texts = TEXTS * 4

    def seen(docs) -> list:
        return [([(e.start, e.end) for e in d.ents], [(s.start, s.end) for s in d.spans["ner_1"]]) for d in docs]

    alone = seen(nlp.pipe(texts))
    forked = seen(nlp.pipe(texts, n_process=2, batch_size=2))
    assert forked == alone and any(ents for ents, _ in alone)
