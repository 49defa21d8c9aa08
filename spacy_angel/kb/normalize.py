"""Name and id normalisation: the one rule that builds the trie and answers KB lookups.
"""
from __future__ import annotations

import unicodedata


def normalize_id(raw: str) -> str:
    """Canonical form of a concept id, so corpus gold ids and KB ids compare equal.

    Rule: strip surrounding whitespace, then drop ONE leading ``MESH:`` or ``OMIM:`` prefix
    (case-insensitive). Corpora disagree on these prefixes (NCBI-disease writes ``D001943`` and
    ``OMIM:215600``, CTD ``MESH:D001943``, BioSyn dictionaries bare ``215600``). Other ids
    (``HP:0001250``, ``DOID:1234``, ``C0011849``) keep their prefix: it is part of the identifier.
    """
    s = raw.strip()
    if len(s) > 5 and s[4] == ":" and s[:4].upper() in ("MESH", "OMIM"):
        s = s[5:].strip()
    return s


def normalize_name(name: str, lowercase: bool = True) -> str:
    """Unicode NFKC, whitespace runs collapsed to one space, stripped, optionally lowercased.

    NFKC folds compatibility characters (ligatures, full-width forms, non-breaking spaces)
    that a tokenizer would otherwise treat as different names. ``str.split()`` also removes
    line separators, so a normalised name never contains a newline (``names.txt`` relies on it).
    """
    return collapse_whitespace(unicodedata.normalize("NFKC", name), lowercase)


def collapse_whitespace(text: str, lowercase: bool = True) -> str:
    """Whitespace runs collapsed to one space, stripped, optionally lowercased: the form the model
    reads a mention in (:func:`spacy_angel.seq2seq.prompt.normalize_text`), and, after NFKC, a name."""
    text = " ".join(text.split())
    return text.lower() if lowercase else text
