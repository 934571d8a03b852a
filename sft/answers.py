"""Reading an answer out of a reply: the letter of "the answer is (X)", a value a declared pattern
captures, and the ways two answers may be compared (exact, normalized, numeric)."""

from __future__ import annotations

import re
import string

import regex

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


# A declared pattern is the user's regex, run on model replies of any length: one with nested
# quantifiers backtracks in time exponential in a reply's length ((a|aa)+$ on 40 characters ran for
# minutes). The `regex` engine matches under a time limit; past it, the reply has no answer.
MATCH_SECONDS = 0.25


def compiled(pattern, where: str) -> regex.Pattern:
    """A declared answer pattern: text that compiles, with a group (what it captures is the answer)."""
    if not isinstance(pattern, str) or not pattern:
        raise UserError(f"{where}: answer.pattern is {pattern!r}; it must be a regular expression in quotes, "
                        r"e.g. '####\s*(-?[\d,]*\.?\d+)'")
    try:
        compiled_pattern = regex.compile(pattern)
    except (regex.error, OverflowError, RecursionError) as e:
        raise UserError(f"{where}: answer.pattern {pattern[:200]!r} does not compile ({e}); fix the regex "
                        "(in YAML, quote it with single quotes)") from None
    if compiled_pattern.groups < 1:
        raise UserError(f"{where}: answer.pattern {pattern[:200]!r} has no group; put what is the answer in "
                        r"parentheses, e.g. '####\s*(-?[\d,]*\.?\d+)'")
    return compiled_pattern


def captured(pattern: regex.Pattern, text: str) -> str | None:
    """The first group of the last match of `pattern` in `text`; None when there is none, or when
    finding it takes past MATCH_SECONDS."""
    try:
        matches = list(pattern.finditer(text, timeout=MATCH_SECONDS))
    except TimeoutError:
        return None
    return matches[-1].group(1) if matches else None
