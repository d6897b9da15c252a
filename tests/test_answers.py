"""Final answers of exact-answer tasks: extraction, normalisation, votes."""

from __future__ import annotations

import pytest

from actors.answers import AnswerFormatError, extract, tally, validate_format

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, answer", [
    ("The answer is 42.", "42"), ("so 1,234 apples", "1234"), ("from 3 to -7", "-7"), ("4.2 is not an integer", None),
    ("no digits here", None), ("x2 = 5\nFinal: 9", "9"),
])
def test_integer(text, answer):
    assert extract(text, "integer") == answer


def test_number_groups_equal_values():
    assert extract("about 2.50", "number") == extract("2.5", "number") == "2.5"
    assert extract("10.0 in total", "number") == "10"


def test_choice_and_regex():
    assert extract("I pick b, final answer: C", "choice:A|B|C") == "C"
    assert extract("Answer: [Paris]", r"\[(.+?)\]") == "paris"
    assert extract("nothing", r"\[(.+?)\]") is None


@pytest.mark.parametrize("fmt", ["choice:", "(a)(b)", "[unclosed"])
def test_bad_formats_are_refused(fmt):
    with pytest.raises(AnswerFormatError):
        validate_format(fmt)


def test_tally_ignores_missing_answers():
    assert tally(["42", None, "42", "41"]) == {"42": 2, "41": 1}
