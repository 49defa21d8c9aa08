"""Abbreviation detection and expansion (Schwartz & Hearst, 2003), plus a spaCy component.

Why: ANGEL (like BioSyn and GenBioEL) links *expanded* mentions -- "DMD" alone is ambiguous,
"duchenne muscular dystrophy" is not. Corpora were preprocessed with Ab3P; we re-implement the
simpler, well-documented Schwartz–Hearst algorithm so the runtime has no external binary:

1. Find ``long form (SF)`` and, when the parenthesised text is too long to be a short form,
   ``SF (long form)``.
2. A short form has 2–10 characters, at most two words, at least one letter and an
   alphanumeric first character.
3. The long form candidate is at most ``min(|SF| + 5, 2 * |SF|)`` words before the
   parenthesis (within the same sentence/clause); the SF characters are matched right-to-left in
   it, the first SF character at the start of a word; the long form starts at that word.

Deviation from the paper (to avoid false definitions like "(see above)"): a two-word short
form must contain an upper-case letter or a digit.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

# A parenthesised span without nested parentheses.
_PAREN = re.compile(r"\(([^()]*)\)")


# Where a long form may not reach back across (sentence or clause boundary, other brackets).
_BOUNDARY = re.compile(r"(?:[.!?;:](?=\s)|[()\[\]{}])")


_WORD = re.compile(r"\S+")


def _is_valid_short_form(sf: str) -> bool:
    """Schwartz–Hearst short-form conditions (plus the two-word case-or-digit rule)."""
    if not 2 <= len(sf) <= 10:
        return False
    if not sf[0].isalnum() or not any(c.isalpha() for c in sf):
        return False
    words = sf.split()
    if len(words) > 2:
        return False
    if len(words) == 2 and not any(c.isupper() or c.isdigit() for c in sf):
        return False
    return True


def _best_long_form(sf: str, lf: str) -> Optional[int]:
    """Index in ``lf`` where the long form starts, or None (the paper's right-to-left match)."""
    s_index = len(sf) - 1
    l_index = len(lf) - 1
    while s_index >= 0:
        c = sf[s_index].lower()
        if not c.isalnum():
            s_index -= 1
            continue
        # The first SF character must additionally start a word of the long form.
        while l_index >= 0 and (
            lf[l_index].lower() != c or (s_index == 0 and l_index > 0 and lf[l_index - 1].isalnum())
        ):
            l_index -= 1
        if l_index < 0:
            return None
        l_index -= 1
        s_index -= 1
    return lf.rfind(" ", 0, l_index + 1) + 1


def _match(sf: str, before: str, before_offset: int) -> Optional[Tuple[str, int]]:
    """Find the long form of ``sf`` at the end of ``before``; returns (long form, char start)."""
    cut = 0
    for m in _BOUNDARY.finditer(before):
        cut = m.end()
    words = list(_WORD.finditer(before, cut))
    if not words:
        return None
    max_words = min(len(sf) + 5, 2 * len(sf))
    words = words[-max_words:]
    cand_start = words[0].start()
    candidate = before[cand_start:].rstrip()
    idx = _best_long_form(sf, candidate)
    if idx is None:
        return None
    lf = candidate[idx:].strip()
    if not lf or len(lf) <= len(sf) or len(lf.split()) > max_words:
        return None
    # The long form must not contain the short form as a word (e.g. "the DMD gene (DMD)").
    if re.search(r"(?<!\w)" + re.escape(sf) + r"(?!\w)", lf):
        return None
    return lf, before_offset + cand_start + idx


def find_abbreviations(text: str) -> List[Tuple[str, str, int, int]]:
    """All definitions in ``text`` as (short, long, short_start_char, long_start_char)."""
    found: List[Tuple[str, str, int, int]] = []
    for m in _PAREN.finditer(text):
        inner = m.group(1)
        # "(DMD; see ref. 3)" / "(DMD, 1990)": the short form is the part before ';' or ','.
        head = re.split(r"[;,]", inner, maxsplit=1)[0]
        sf = head.strip()
        sf_start = m.start(1) + (len(head) - len(head.lstrip()))
        if sf and len(sf) <= 10 and len(sf.split()) <= 2:
            if not _is_valid_short_form(sf):
                continue
            res = _match(sf, text[: m.start()], 0)
            if res is not None:
                found.append((sf, res[0], sf_start, res[1]))
            continue
        # Reverse pattern "SF (long form)": SF is the single word right before the parenthesis.
        prev = re.search(r"(\S+)\s*$", text[: m.start()])
        lf = inner.strip()
        if prev is None or not lf:
            continue
        sf = prev.group(1).strip(".,;:\"'")
        sf_start = prev.start(1) + prev.group(1).find(sf) if sf else -1
        if not sf or not _is_valid_short_form(sf) or len(sf.split()) != 1:
            continue
        lf_offset = m.start(1) + (len(inner) - len(inner.lstrip()))
        max_words = min(len(sf) + 5, 2 * len(sf))
        if len(lf.split()) > max_words:
            continue
        idx = _best_long_form(sf, lf)
        # In the reverse pattern the whole parenthesised text must be the long form.
        if idx != 0 or len(lf) <= len(sf):
            continue
        found.append((sf, lf, sf_start, lf_offset))
    return found


def expand_abbreviations(text: str) -> Dict[str, str]:
    """short -> long for one document; the first definition of a short form wins."""
    out: Dict[str, str] = {}
    for sf, lf, _, _ in find_abbreviations(text):
        out.setdefault(sf, lf)
    return out


def expand_mention(mention: str, abbreviations: Dict[str, str]) -> str:
    """Replace whole-word abbreviations in ``mention`` by their long forms (case-sensitive).

    A defining pattern inside the mention ("Duchenne muscular dystrophy (DMD)") is reduced to
    the long form rather than expanded twice.
    """
    if not abbreviations or not mention:
        return mention
    out = mention
    for sf in sorted(abbreviations, key=len, reverse=True):
        lf = abbreviations[sf]
        out = re.sub(
            re.escape(lf) + r"\s*\(\s*" + re.escape(sf) + r"\s*\)", lambda _m: lf, out, flags=re.I
        )
    keys = sorted((k for k in abbreviations if k), key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(k) for k in keys) + r")(?!\w)")
    return pattern.sub(lambda m: abbreviations[m.group(1)], out)
