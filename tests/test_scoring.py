"""The check suite and the ranking: real checks on text, no engine."""

from __future__ import annotations

import pytest

from actors.scoring import CHECK_NAMES, extract_code_blocks, rank_proposals, requirement_coverage, score_proposal
from actors.specs import Proposal, ScoringSpec

GOOD = """Plan: add a retry wrapper with exponential backoff.

- retries failed HTTP calls up to 3 times
- logs every failure with structured logging

```python
def retry(fn, attempts=3):
    for i in range(attempts):
        try:
            return fn()
        except OSError:
            if i == attempts - 1:
                raise
```

```json
{"attempts": 3, "backoff": "exponential"}
```

```yaml
retry:
  attempts: 3
```
"""


def checks_of(content: str, requirements: list[str] | None = None, scoring: ScoringSpec | None = None):
    checks, score = score_proposal(content, requirements or [], scoring or ScoringSpec())
    return {c.name: c for c in checks}, score


def test_good_proposal_passes_every_check():
    checks, score = checks_of(GOOD, ["Retry failed HTTP calls", "Use exponential backoff", "Structured logging"])
    assert list(checks) == list(CHECK_NAMES)
    assert all(c.passed for c in checks.values()), {n: c.message for n, c in checks.items()}
    assert score == 1.0
    assert "3 code block(s) parse" in checks["code_blocks_parse"].message


@pytest.mark.parametrize(
    "block, lang",
    [
        ("```python\ndef f(:\n    pass\n```", "python"),
        ("```py\nx = = 1\n```", "py"),
        ('```json\n{"a": 1,}\n```', "json"),
        ("```yaml\na: [1, 2\nb: 3\n```", "yaml"),
        ("```yml\nkey: value\n  bad: indent\n```", "yml"),
    ],
)
def test_bad_code_block_fails_and_is_named(block, lang):
    content = "Some intro text that is long enough.\n\n```python\nx = 1\n```\n\n" + block + "\n"
    checks, score = checks_of(content)
    check = checks["code_blocks_parse"]
    assert not check.passed
    assert check.message.startswith(f"block 2 ({lang}, line 7)")
    assert score == pytest.approx(4 / 5)


def test_untagged_and_other_blocks_are_skipped():
    content = "Intro line.\n```\ndef f(:\n```\n```bash\nif then fi ((\n```\n"
    check = checks_of(content)[0]["code_blocks_parse"]
    assert check.passed
    assert "2 untagged/other skipped" in check.message


def test_no_code_blocks_pass_vacuously():
    check = checks_of("Just prose here.\nOn two lines.")[0]["code_blocks_parse"]
    assert check.passed and "no fenced code blocks" in check.message


def test_unclosed_block_is_checked_to_the_end():
    # A model cut off by max_tokens leaves the fence open; its truncated code must not pass.
    blocks = extract_code_blocks("Intro\n```python\ndef f(x):\n    return (x +")
    assert len(blocks) == 1 and not blocks[0].closed
    check = checks_of("Intro text long enough\n```python\ndef f(x):\n    return (x +")[0]["code_blocks_parse"]
    assert not check.passed and "unclosed" in check.message


def test_inline_triple_backticks_are_not_a_fence():
    assert extract_code_blocks("```x``` inline at the start of a line\nand more") == []


def test_missing_requirements_are_listed():
    checks, _ = checks_of(GOOD, ["Retry failed HTTP calls", "Encrypt secrets with a KMS key", "Use Go"])
    check = checks["requirements_addressed"]
    assert not check.passed
    assert "missing 2 of 3" in check.message
    assert "Encrypt secrets with a KMS key" in check.message and "Use Go" in check.message
    assert "Retry failed" not in check.message


def test_requirement_words_match_by_stem():
    # "retries" ~ "retry", "validation" ~ "validates"; "add" is too short to count.
    assert requirement_coverage("Add retries and input validation", "We retry and it validates input.") == (3, 3)
    found, total = requirement_coverage("Paginate the results with cursors", "results are returned")
    assert (found, total) == (1, 3)


def test_no_requirements_pass_vacuously():
    check = checks_of(GOOD, [])[0]["requirements_addressed"]
    assert check.passed and check.message == "no requirements given"


def test_length_limits():
    checks, _ = checks_of("   short   ", scoring=ScoringSpec(min_chars=20))
    assert not checks["non_empty"].passed
    checks, _ = checks_of("x" * 101, scoring=ScoringSpec(min_chars=1, max_chars=100))
    assert checks["non_empty"].passed and not checks["within_limits"].passed


def test_structure():
    assert not checks_of("One single line of plain prose without structure.")[0]["structured"].passed
    assert checks_of("- a single list item that is long")[0]["structured"].passed
    assert checks_of("## Heading only, long enough")[0]["structured"].passed
    assert checks_of("first line\nsecond line")[0]["structured"].passed


def test_weights_change_the_score():
    content = "One single line of plain prose, long enough to count."  # fails only `structured`
    _, plain = checks_of(content)
    assert plain == pytest.approx(4 / 5)
    checks, heavy = checks_of(content, scoring=ScoringSpec(weights={"structured": 6.0}))
    assert checks["structured"].weight == 6.0 and checks["non_empty"].weight == 1.0
    assert heavy == pytest.approx(4 / 10)
    _, ignored = checks_of(content, scoring=ScoringSpec(weights={"structured": 0.0}))
    assert ignored == 1.0


def test_zero_total_weight_scores_zero():
    zero = ScoringSpec(weights={name: 0.0 for name in CHECK_NAMES})
    assert checks_of(GOOD, scoring=zero)[1] == 0.0


def test_rank_by_score_ties_keep_order():
    proposals = [
        Proposal(author="a", content="", score=0.5),
        Proposal(author="b", content="", score=0.9),
        Proposal(author="c", content="", score=0.5),
        Proposal(author="d", content="", score=None),
        Proposal(author="e", content="", score=0.9),
    ]
    ranked = rank_proposals(proposals)
    assert [p.author for p in ranked] == ["b", "e", "a", "c", "d"]
    assert [p.rank for p in ranked] == [1, 2, 3, 4, 5]
    assert proposals[0].rank == 3  # ranks are set on the given objects
