"""``scripts/ner_vote.py`` scores one NER against votes of several on a gold DocBin and chooses on it;
``scripts/assemble.py --voters ... --ner-vote FILE`` builds the chosen NER into the pipeline. Issue 28:
every switch of the end-to-end pipeline is chosen on dev, with its dev figure."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest
from conftest import TINY_NER_TEXTS, project_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLD = [["cystic fibrosis", "breast cancer"], ["Myotonic dystrophy", "Huntington disease"],
        ["Colorectal cancer", "ovarian cancer"], []]



@pytest.fixture(scope="module")
def gold_docbin(tmp_path_factory) -> Path:
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    docs = []
    for text, names in zip(TINY_NER_TEXTS, GOLD):
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(text.index(name), text.index(name) + len(name), label="Disease") for name in names]
        docs.append(doc)
    path = tmp_path_factory.mktemp("ner-gold") / "dev.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


def test_each_row_scores_as_the_vote_pipeline_evaluates(tmp_path, tiny_ner_seeds: List[Path], gold_docbin) -> None:
    import spacy
    from spacy.tokens import DocBin
    from spacy.training import Example

    from spacy_angel.pipeline.ner_vote import add_ner_vote

    out = tmp_path / "vote.json"
    assert project_script("ner_vote").main([str(gold_docbin), *map(str, tiny_ner_seeds), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r["min_votes"] for r in rows if "model" not in r] == [None, 1, 2, 3] and len(rows) == 6
    for row in rows:  # each row again, through the components and spaCy's own evaluate
        nlp = spacy.load(tiny_ner_seeds[row.get("model", 0)])
        if row["min_votes"] is not None:
            add_ner_vote(nlp, [spacy.load(path) for path in tiny_ner_seeds[1:]], row["min_votes"])
        gold = list(DocBin().from_disk(gold_docbin).get_docs(nlp.vocab))
        scores = nlp.evaluate([Example(nlp.make_doc(doc.text), doc) for doc in gold])
        assert row["ents"]["f"] == round(100 * scores["ents_f"], 2)
    assert len({r["ents"]["f"] for r in rows}) > 1, "rows that all agree could not show a wrong choice"
    best = max(r["ents"]["f"] for r in rows if "model" not in r)
    chosen = next(r for r in rows if "model" not in r and r["min_votes"] == report["chosen"]["min_votes"])
    assert chosen["ents"]["f"] == best


def test_choose_prefers_the_single_model_then_fewer_votes_on_ties() -> None:
    choose = project_script("ner_vote").choose
    rows = [{"min_votes": None, "ents": {"f": 80.0}}, {"min_votes": 1, "ents": {"f": 80.0}},
            {"min_votes": 2, "ents": {"f": 81.0}}, {"min_votes": 3, "ents": {"f": 81.0}}]
    assert choose(rows) == 2
    assert choose(rows[:2]) is None


@pytest.mark.parametrize("min_votes", [None, 2])
def test_assemble_applies_the_choice(tmp_path, tiny_ner_seeds, tiny_model_dir, tiny_kb_dir, min_votes) -> None:
    import spacy

    choice = tmp_path / "vote.json"
    choice.write_text(json.dumps({"chosen": {"min_votes": min_votes}, "rows": []}))
    out = tmp_path / "pipeline"
    argv = [str(tiny_ner_seeds[0]), str(tiny_model_dir), str(tiny_kb_dir), "--output", str(out), "--device", "cpu",
            "--num-beams", "3", "--top-k", "3", "--mode", "beam", "--voters", *map(str, tiny_ner_seeds[1:]),
            "--ner-vote", str(choice)]
    assert project_script("assemble").main(argv) == 0
    nlp = spacy.load(out)
    if min_votes is None:
        assert nlp.pipe_names == ["tok2vec", "ner", "angel_abbreviations", "angel_linker"]
    else:
        assert nlp.pipe_names[-3:] == ["angel_ner_vote", "angel_abbreviations", "angel_linker"]
        assert nlp.get_pipe("angel_ner_vote").min_votes == 2
        assert nlp.get_pipe("angel_ner_vote").spans_keys == ["ner", "ner_1", "ner_2"]


@pytest.mark.parametrize("chosen, voters, message", [
    ({"min_votes": 4}, 2, "null or 1 to 3"),
    ({"min_votes": True}, 2, "null or 1 to 3"),
    ({}, 2, "not a ner_vote.py report"),
    ({"min_votes": 2}, 0, "go together"),
])
def test_assemble_refuses_a_bad_choice(tmp_path, tiny_ner_seeds, tiny_kb_dir, capsys, chosen, voters, message) -> None:
    choice = tmp_path / "vote.json"
    choice.write_text(json.dumps({"chosen": chosen}))
    argv = [str(tiny_ner_seeds[0]), "unused-model", str(tiny_kb_dir), "--output", str(tmp_path / "out"),
            "--ner-vote", str(choice)] + (["--voters", *map(str, tiny_ner_seeds[1:1 + voters])] if voters else [])
    assert project_script("assemble").main(argv) == 1
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_assemble_refuses_a_voter_without_ner(tmp_path, tiny_ner_seeds, tiny_kb_dir, capsys) -> None:
    import spacy

    spacy.blank("en").to_disk(tmp_path / "blank")
    choice = tmp_path / "vote.json"
    choice.write_text(json.dumps({"chosen": {"min_votes": 2}}))
    argv = [str(tiny_ner_seeds[0]), "unused-model", str(tiny_kb_dir), "--output", str(tmp_path / "out"),
            "--ner-vote", str(choice), "--voters", str(tiny_ner_seeds[1]), str(tmp_path / "blank")]
    assert project_script("assemble").main(argv) == 1
    assert "blank (--voters) has no 'ner'" in capsys.readouterr().err and not (tmp_path / "out").exists()
