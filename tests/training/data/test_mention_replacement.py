"""Mention replacement (the NER training augmenter): copies whose gold entities are other names."""
from __future__ import annotations

import random
from pathlib import Path
from typing import List

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry

from training.data.mention_replacement import create_mention_replacement_augmenter, replaced_copy

TEXT = "Patients with breast cancer and ataxia-telangiectasia were seen."


def _doc(nlp) -> Doc:
    doc = nlp.make_doc(TEXT)
    doc.ents = [doc.char_span(14, 27, label="Disease"), doc.char_span(32, 53, label="Disease")]
    return doc


def _docbin(tmp_path: Path, nlp) -> Path:
    path = tmp_path / "train.spacy"
    DocBin(docs=[_doc(nlp)]).to_disk(path)
    return path


def _texts(examples: List[Example]) -> List[str]:
    return [ex.reference.text for ex in examples]


def test_every_entity_replaced_keeps_the_words_around_and_the_labels() -> None:
    nlp = spacy.blank("en")
    copy = replaced_copy(nlp, _doc(nlp), ["Huntington disease"], 1.0, random.Random(0))
    assert copy is not None
    assert copy.reference.text == "Patients with Huntington disease and Huntington disease were seen."
    assert [(e.text, e.label_) for e in copy.reference.ents] == [("Huntington disease", "Disease")] * 2
    assert copy.predicted.text == copy.reference.text and not copy.predicted.ents


def test_no_replacement_gives_no_copy() -> None:
    nlp = spacy.blank("en")
    assert replaced_copy(nlp, _doc(nlp), ["Huntington disease"], 0.0, random.Random(0)) is None


def test_the_augmenter_yields_the_example_then_a_copy_by_level(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    example = Example(nlp.make_doc(TEXT), _doc(nlp))
    always = create_mention_replacement_augmenter(level=1.0, replace=1.0, corpus_path=str(_docbin(tmp_path, nlp)))
    out = list(always(nlp, example))
    assert out[0] is example and len(out) == 2
    # the corpus's own mentions are the names: each entity becomes one of the two
    assert {e.text for e in out[1].reference.ents} <= {"breast cancer", "ataxia-telangiectasia"}
    never = create_mention_replacement_augmenter(level=0.0, corpus_path=str(_docbin(tmp_path, nlp)))
    assert list(never(nlp, example)) == [example]


def test_a_seed_repeats_its_draws_and_another_seed_draws_others(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    example = Example(nlp.make_doc(TEXT), _doc(nlp))
    corpus = str(_docbin(tmp_path, nlp))

    def run(seed: int) -> List[str]:
        augment = create_mention_replacement_augmenter(level=0.5, replace=0.5, corpus_path=corpus, seed=seed)
        return [t for _ in range(40) for t in _texts(list(augment(nlp, example)))]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_a_config_resolves_the_registered_augmenter(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    config = {"augmenter": {"@augmenters": "spacy_angel.mention_replacement.v1", "level": 1.0, "replace": 1.0,
                            "corpus_path": str(_docbin(tmp_path, nlp))}}
    augment = registry.resolve(config)["augmenter"]
    assert len(list(augment(nlp, Example(nlp.make_doc(TEXT), _doc(nlp))))) == 2


@pytest.mark.parametrize(
    "settings, code",
    [({"level": 1.5, "corpus_path": "x"}, "E395"), ({"replace": -0.1, "corpus_path": "x"}, "E395"), ({}, "E396")],
)
def test_bad_settings_are_refused(settings, code) -> None:
    with pytest.raises(ValueError, match=code):
        create_mention_replacement_augmenter(**settings)


def test_a_corpus_without_entities_is_named_in_the_error(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    path = tmp_path / "empty.spacy"
    DocBin(docs=[nlp.make_doc("No disease here.")]).to_disk(path)
    augment = create_mention_replacement_augmenter(corpus_path=str(path))
    with pytest.raises(ValueError, match="E397.*empty.spacy"):
        list(augment(nlp, Example(nlp.make_doc(TEXT), _doc(nlp))))


def test_a_kb_adds_its_names_of_three_characters_or_more(tmp_path: Path) -> None:
    from conftest import kb_from

    nlp = spacy.blank("en")
    kb_dir = tmp_path / "kb"
    kb_from({"D1": ["Gaucher disease", "GD"], "D2": ["Fabry disease"]}).to_disk(kb_dir)
    augment = create_mention_replacement_augmenter(level=1.0, replace=1.0, kb_path=str(kb_dir))
    example = Example(nlp.make_doc(TEXT), _doc(nlp))
    seen = {e.text for _ in range(30) for ex in list(augment(nlp, example))[1:] for e in ex.reference.ents}
    assert seen == {"gaucher disease", "fabry disease"}  # as the KB stores them: lowercased, "GD" too short
