"""Mention replacement for NER training: gold entity spans swapped for other names (a spaCy augmenter).

Why: the CPU NER of the end-to-end workflow misses most on test mentions whose surface it never saw in
training (NCBI-disease test NER F1 76.4, dev 79.0). Replacing a gold mention by another disease name
keeps the sentence's cue words ("patients with X", "X is an autosomal dominant disorder") and shows
the tagger new surfaces there -- the "mention replacement" of Dai & Adel (COLING 2020), which helps
most on small corpora. Measured with averaged weights (``docs/results/ner_training_variants_dev.json``):
dev F1 80.7 -> 82.5 (test 79.1, from 76.4 with neither change); without averaging it did not help.
The names come from the training corpus's own mentions and, optionally, a KB (any vocabulary
``kb build`` made), so a user's NER can learn their vocabulary's surfaces too.

Registered for spaCy configs as ``spacy_angel.mention_replacement.v1`` (entry point
``spacy_augmenters``)::

    [corpora.train.augmenter]
    @augmenters = "spacy_angel.mention_replacement.v1"
    level = 0.5
    replace = 0.5
    corpus_path = ${paths.train}
    kb_path = null

Each training example is yielded as it is; with probability ``level`` a copy follows in which each
gold entity is replaced with probability ``replace``. Draws come from a ``random.Random(seed)`` of the
augmenter's own, so a run is repeatable.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.util import registry

from spacy_angel.errors import Errors


def corpus_mentions(path: Path, vocab) -> List[str]:
    """The distinct gold entity texts of a DocBin, in first-seen order."""
    seen = dict.fromkeys(e.text for doc in DocBin().from_disk(path).get_docs(vocab) for e in doc.ents)
    return [text for text in seen if text.strip()]


def kb_names(path: Path, min_chars: int = 3) -> List[str]:
    """The KB's names of at least ``min_chars`` characters (shorter ones are mostly abbreviations), as the KB
    stores them (lowercased, unless it was built with case kept)."""
    from spacy_angel.kb.store import KnowledgeBase

    return [name for name in KnowledgeBase.from_disk(path).names if len(name) >= min_chars]


def replaced_copy(nlp: Language, reference: Doc, names: Sequence[str], replace: float,
                  rng: random.Random) -> Optional[Example]:
    """A new example whose gold entities are, each with probability ``replace``, another name; None if none was."""
    words: List[str] = []
    spaces: List[bool] = []
    tags: List[str] = []

    def outside(tokens: Span) -> None:
        words.extend(t.text for t in tokens)
        spaces.extend(bool(t.whitespace_) for t in tokens)
        tags.extend("O" for _ in tokens)

    cursor = 0
    changed = False
    for ent in reference.ents:
        outside(reference[cursor:ent.start])
        if rng.random() < replace:
            new = list(nlp.make_doc(rng.choice(names)))
            changed = True
        else:
            new = list(ent)
        words.extend(t.text for t in new)
        spaces.extend([bool(t.whitespace_) for t in new[:-1]] + [bool(ent[-1].whitespace_)])
        tags.extend([f"B-{ent.label_}"] + [f"I-{ent.label_}"] * (len(new) - 1))
        cursor = ent.end
    if not changed:
        return None
    outside(reference[cursor:])
    gold = Doc(nlp.vocab, words=words, spaces=spaces, ents=tags)
    return Example(nlp.make_doc(gold.text), gold)


@registry.augmenters("spacy_angel.mention_replacement.v1")
def create_mention_replacement_augmenter(
    level: float = 0.5,
    replace: float = 0.5,
    corpus_path: Optional[str] = None,
    kb_path: Optional[str] = None,
    seed: int = 0,
) -> Callable[[Language, Example], Iterator[Example]]:
    """The augmenter; names are read on first use (spaCy builds the corpus before the vocabulary exists)."""
    for name, value in (("level", level), ("replace", replace)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(Errors.E395.format(name=name, value=value))
    if corpus_path is None and kb_path is None:
        raise ValueError(Errors.E396)
    rng = random.Random(seed)
    names: List[str] = []

    def augment(nlp: Language, example: Example) -> Iterator[Example]:
        yield example
        if not names:
            pool = dict.fromkeys(corpus_mentions(Path(corpus_path), nlp.vocab) if corpus_path else [])
            pool.update(dict.fromkeys(kb_names(Path(kb_path)) if kb_path else []))
            names.extend(pool)
            if not names:
                raise ValueError(Errors.E397.format(sources=[p for p in (corpus_path, kb_path) if p]))
        if example.reference.ents and rng.random() < level:
            copy = replaced_copy(nlp, example.reference, names, replace, rng)
            if copy is not None:
                yield copy

    return augment
