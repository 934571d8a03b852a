"""Reading an answer out of a reply: the letter of "the answer is (X)", a value a declared pattern
captures, and the ways two answers may be compared (exact, normalized, numeric)."""

from __future__ import annotations

import re
import string

from sft.params import UserError

# The letter counts in parentheses, "(C)" (any case), or standing alone as a capital before
# punctuation, a line break or the end: "The answer is C." and "C, because" count; "the answer is
# a lower dose", "the answer is: d-dimer" and "the answer is E. coli infection" do not (a full stop
# followed by a lower-case word is an abbreviation, not the end of the answer).
LETTER = re.compile(r"(?i:the answer is):?\s*(?:\(([A-Ja-j])\)|([A-J])(?=\s*$|\s*\n|[,;:!?)]|\.(?!\s*[a-z])))")


def answer_letter(text: str) -> str | None:
    """The letter of the last "the answer is (X)" in a reply; None when there is none."""
    found = LETTER.findall(text)
    return (found[-1][0] or found[-1][1]).upper() if found else None


COMPARES = ("exact", "normalized", "numeric")
PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalized(text: str) -> str:
    """Case, spaces and punctuation do not count."""
    return " ".join(text.lower().translate(PUNCTUATION).split())


def as_number(text: str) -> float | None:
    """'1,234.50' -> 1234.5, '$18' -> 18.0; None for text that is not a number."""
    cleaned = re.sub(r"[\s,$€£%]", "", text)
    try:
        return float(cleaned)
    except ValueError:
        return None


def same(got: str, want: str, compare: str) -> bool:
    if compare == "numeric":
        a, b = as_number(got), as_number(want)
        return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))
    if compare == "normalized":
        return normalized(got) == normalized(want)
    return got.strip() == want.strip()


def compiled(pattern: str, where: str) -> re.Pattern:
    """A declared answer pattern: it must compile and have a group (what it captures is the answer)."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise UserError(f"{where}: answer.pattern {pattern!r} does not compile ({e}); fix the regex "
                        "(in YAML, quote it with single quotes)") from None
    if regex.groups < 1:
        raise UserError(f"{where}: answer.pattern {pattern!r} has no group; put what is the answer in "
                        r"parentheses, e.g. '####\s*(-?[\d,]*\.?\d+)'")
    return regex


def captured(regex: re.Pattern, text: str) -> str | None:
    """The first group of the last match of `regex` in `text`."""
    matches = list(regex.finditer(text))
    return matches[-1].group(1) if matches else None
