"""Composite mentions split into their conjuncts: "breast and ovarian cancer" -> "breast cancer", "ovarian cancer".

Why: NCBI-disease and BC5CDR annotate a coordination as ONE mention with several ids
(``D001943|D010051``); no single KB name matches it, so the linker, fed the whole phrase, finds at
best one of the concepts. :func:`split_composite` rebuilds each conjunct as a stand-alone name; the
``angel_linker`` component (``split_composite = true``) links each one and gives the span all ids.

Handled (a phrase whose last separator is ``and``, ``or`` or ``and/or``, commas before it):

* shared head, "X and Y Z": "breast and ovarian cancer", "breast or ovarian cancers",
  "colorectal, endometrial, and ovarian cancers", "Duchenne and Becker muscular dystrophies".
  Every item but the last has the same number of words ``w``; the last has more than ``w``, and
  what follows its first ``w`` words is the shared head, added to every item. A plural head is
  made singular ("cancers" -> "cancer", "dystrophies" -> "dystrophy"; :func:`singular`), as it is
  plural only because several things share it;
* designators, "type 1 and 2 diabetes", "hemophilia A and B": the first item ends in a
  designator (a number, a Roman numeral, a single letter), the middle items are designators, the
  last starts with one; the first item's other words are a shared prefix, the last item's other
  words a shared head: "type 1 diabetes", "type 2 diabetes";
* full items with one head, "breast cancer and ovarian cancer": items of two or more words with the
  same last word are kept as written;
* with a KB (``is_name``): items that are all KB names ("diabetes and hypertension") are kept as
  written.

Not split (the phrase is linked whole):

* a phrase that is itself a KB name (``is_name``), or contains a fixed coordination
  (:data:`FIXED_COORDINATIONS`). "head and neck cancer" is the known hard case: text alone reads it
  as "head cancer" + "neck cancer", but it is one concept (MeSH D006258). We keep it whole, by the
  fixed list and because MEDIC lists the phrase as a name; a fixed expression missing from both
  is split wrongly;
* unlike heads without a KB ("diabetes and hypertension"), an item longer than the last
  ("hereditary breast and ovarian cancer": HBOC, one syndrome), items of unequal length,
  bare comma lists ("carcinoma, ductal" is an inverted name, not a list);
* a phrase with brackets, a suspended hyphen ("pre- and postnatal"), a slash ("breast/ovarian
  cancer": also in names like "HIV/AIDS"), a head before the items ("cancer of the breast and
  ovary"), or more than :data:`MAX_ITEMS` items.
"""
from __future__ import annotations

import re
from typing import Callable, List, Optional, Sequence, Tuple

MAX_ITEMS = 6

#: coordinations that name one thing ("head and neck cancer" is not "head cancer" + "neck cancer");
#: matched as whole words, case-insensitively, anywhere in the phrase
FIXED_COORDINATIONS: Tuple[str, ...] = ("head and neck", "hand, foot and mouth", "ear, nose and throat")

# The last separator: ", and" / ", or" / " and " / " or " / " and/or ".
_LAST = re.compile(r"\s*,?\s+(?:and/or|and|or)\s+", re.I)
_COMMA = re.compile(r"\s*,\s*")
_DESIGNATOR = re.compile(r"\d+[a-z]?|[ivx]+|[a-z]", re.I)
_FIXED = [re.compile(r"(?<!\w)" + r"\s*,?\s+".join(re.escape(w) for w in re.split(r",?\s+", f)) + r"(?!\w)", re.I)
          for f in FIXED_COORDINATIONS]

_INVARIANT = frozenset({"diabetes", "rabies", "herpes", "measles", "mumps", "rickets", "scabies", "aids", "series",
                        "species", "syphilis", "lupus", "tetanus", "pertussis", "mellitus", "insipidus", "hirsutism"})
_IRREGULAR = {"metastases": "metastasis", "psychoses": "psychosis", "neuroses": "neurosis", "stenoses": "stenosis",
              "fibroses": "fibrosis", "diagnoses": "diagnosis"}


def singular(word: str) -> str:
    """A plural head word made singular with simple English rules (case kept); others unchanged.

    "cancers" -> "cancer", "dystrophies" -> "dystrophy", "metastases" -> "metastasis"; words that
    only look plural ("diabetes", "herpes", "syphilis", "lupus") stay as they are.
    """
    low = word.lower()
    if low in _IRREGULAR:
        return _match_case(word, _IRREGULAR[low])
    if low in _INVARIANT or len(low) < 4 or not low.endswith("s") or low.endswith(("ss", "us", "is", "ous")):
        return word
    if low.endswith("ies"):
        return word[:-3] + ("Y" if word[-3:].isupper() else "y")
    return word[:-1]


def _match_case(word: str, replacement: str) -> str:
    if word.isupper():
        return replacement.upper()
    if word[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def coordination_items(text: str) -> Optional[List[List[str]]]:
    """The words of each coordinated item, or None when ``text`` is not a plain coordination."""
    if re.search(r"[()\[\]{}/]", re.sub(r"(?<!\w)and/or(?!\w)", " ", text, flags=re.I)):
        return None
    separators = list(_LAST.finditer(text))
    if len(separators) != 1:  # no "and"/"or", or several ("A and B or C"): not split
        return None
    last = separators[0]
    head, tail = text[: last.start()], text[last.end() :]
    items = [p for p in _COMMA.split(head)] + [tail]
    words = [item.split() for item in items]
    if len(words) < 2 or len(words) > MAX_ITEMS or any(not w for w in words):
        return None
    if any(w[-1].endswith("-") or w[0].startswith("-") for w in words):  # "pre- and postnatal"
        return None
    return words


def split_composite(text: str, is_name: Optional[Callable[[str], bool]] = None) -> Tuple[str, ...]:
    """The conjuncts of a composite mention, or ``(text,)`` when it is not split (module docstring).

    ``is_name(phrase) -> bool`` (optional, e.g. a KB lookup): a phrase that is a name is not split,
    and a coordination of names is split into them.
    """
    if is_name is not None and is_name(text):
        return (text,)
    if any(p.search(text) for p in _FIXED):
        return (text,)
    items = coordination_items(text)
    if items is None:
        return (text,)
    found = (
        _names(items, is_name)
        or _designators(items)
        or _shared_head(items)
        or _same_head(items)
    )
    return tuple(dict.fromkeys(found)) if found else (text,)


def _names(items: Sequence[List[str]], is_name: Optional[Callable[[str], bool]]) -> List[str]:
    phrases = [" ".join(w) for w in items]
    return phrases if is_name is not None and all(is_name(p) for p in phrases) else []


def _is_designator(word: str) -> bool:
    return bool(_DESIGNATOR.fullmatch(word))


def _designators(items: Sequence[List[str]]) -> List[str]:
    first, middle, last = items[0], items[1:-1], items[-1]
    if len(first) < 2 or not _is_designator(first[-1]) or not _is_designator(last[0]):
        return []
    if any(len(m) != 1 or not _is_designator(m[0]) for m in middle):
        return []
    prefix = first[:-2] + [singular(first[-2])]  # "types 1 and 2 diabetes" -> "type 1 diabetes"
    suffix = last[1:]
    return [" ".join(prefix + [d] + suffix) for d in [first[-1]] + [m[0] for m in middle] + [last[0]]]


def _shared_head(items: Sequence[List[str]]) -> List[str]:
    width = len(items[0])
    if any(len(w) != width for w in items[:-1]) or len(items[-1]) <= width:
        return []
    head = items[-1][width:]
    head = head[:-1] + [singular(head[-1])]
    return [" ".join(w + head) for w in items[:-1]] + [" ".join(items[-1][:width] + head)]


def _same_head(items: Sequence[List[str]]) -> List[str]:
    if any(len(w) < 2 for w in items) or len({singular(w[-1]).lower() for w in items}) != 1:
        return []
    return [" ".join(w) for w in items]
