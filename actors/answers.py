"""Final answers of exact-answer tasks: extract one from a text, normalize it, count the votes.

A request declares `constraints.answer_format`:
- "integer": the last integer in the text ("1,234" and "-7" included);
- "number": the last number (integers and decimals; equal values vote together: "2.50" ~ "2.5");
- "choice:A|B|C": the last of the listed options that stands alone in the text (case-insensitive);
- any other value: a regular expression with exactly one group; its last match's group, stripped.
"""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal, InvalidOperation

# A sentence's full stop may follow a number ("is 42."); a decimal point may not ("4.2").
_INTEGER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?!\d|\.\d)|(?<![\w.])-?\d+(?!\d|\.\d)")
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])")


class AnswerFormatError(ValueError):
    """answer_format is not one of the kinds above (or its regex does not compile / has no group)."""


def validate_format(fmt: str) -> None:
    if fmt in ("integer", "number"):
        return
    if fmt.startswith("choice:"):
        if not [o for o in fmt[len("choice:"):].split("|") if o.strip()]:
            raise AnswerFormatError("answer_format 'choice:' needs options, e.g. 'choice:A|B|C'")
        return
    try:
        pattern = re.compile(fmt)
    except re.error as exc:
        raise AnswerFormatError(f"answer_format is not integer, number, choice:... or a valid regex: {exc}") from None
    if pattern.groups != 1:
        raise AnswerFormatError(f"answer_format regex must have exactly one group, it has {pattern.groups}")


def _canonical_number(text: str) -> str | None:
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    value = value.normalize()
    return format(value, "f") if value != 0 else "0"


def extract(text: str, fmt: str) -> str | None:
    """The canonical final answer of `text`, or None when it has none."""
    text = text or ""
    if fmt in ("integer", "number"):
        found = (_INTEGER if fmt == "integer" else _NUMBER).findall(text)
        return _canonical_number(found[-1]) if found else None
    if fmt.startswith("choice:"):
        options = [o.strip() for o in fmt[len("choice:"):].split("|") if o.strip()]
        best, where = None, -1
        for option in options:
            for m in re.finditer(rf"(?<!\w){re.escape(option)}(?!\w)", text, re.IGNORECASE):
                if m.start() > where:
                    best, where = option, m.start()
        return best
    try:
        matches = list(re.finditer(fmt, text))
    except re.error:
        return None
    if not matches or matches[-1].group(1) is None:
        return None
    return " ".join(matches[-1].group(1).split()).casefold() or None


def tally(answers: list[str | None]) -> dict[str, int]:
    """answer -> how many of the answers are it (None: no answer, counts for nothing)."""
    return dict(Counter(a for a in answers if a is not None))
