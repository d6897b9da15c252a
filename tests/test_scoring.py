"""The decision rule on fixed candidate pools, with the real verifiers: no engine."""

from __future__ import annotations

import functools
import itertools
import random

import pytest

from actors.scoring import decide, displaces, passes_tests, score_checks, settled, undecided, verifier_key
from actors.models.councils import ScoringSpec
from actors.models.records import CheckResult, Proposal, Version
from actors.models.requests import Constraints
from actors.verifiers import run_verifiers

pytestmark = pytest.mark.unit

TASK = "Write a Python function is_palindrome(s) that ignores case."
REQUIREMENTS = ["ignore case"]
TESTS = ("assert is_palindrome('Aba')\n"
         "assert not is_palindrome('ab')\n"
         "assert is_palindrome('')")
CORRECT = "```python\ndef is_palindrome(s):\n    s = s.lower()\n    return s == s[::-1]\n```"
CORRECT_TOO = "Here it is:\n```python\ndef is_palindrome(s: str) -> bool:\n    t = s.casefold()\n    return t == t[::-1]\n```"
CASE_SENSITIVE = "```python\ndef is_palindrome(s):\n    return s == s[::-1]\n```"  # 2/3
WRONG = "```python\ndef is_palindrome(s):\n    return False\n```"  # 1/3
BROKEN = "```python\ndef is_palindrome(s:\n    return s\n```"
UNDEFINED = "```python\ndef is_palindrome(s):\n    return s == reversed_string(s)\n```"
LOREM = "lorem ipsum dolor sit amet\nconsectetur adipiscing elit, sed do eiusmod tempor incididunt"
ECHO = "Write a Python function is_palindrome(s) that ignores case.\n- ignore case"
EMPTY_BLOCK = "My solution:\n```python\n```"
PROSE = ("A palindrome reads the same backwards. Lower-case the string first so case is ignored, "
         "then compare it with its reverse; that is all there is to it.")

BAD = [CASE_SENSITIVE, WRONG, BROKEN, UNDEFINED, LOREM, ECHO, EMPTY_BLOCK, PROSE, ""]
GOOD = [CORRECT, CORRECT_TOO]
VERIFIERS = ["content", "python"]


@functools.lru_cache(maxsize=None)
def checks_of(text: str, tests: str | None) -> tuple[CheckResult, ...]:
    """The real verifiers' checks of one text (each text is verified once per test session)."""
    return tuple(run_verifiers(text, TASK, Constraints(requirements=REQUIREMENTS, tests=tests), VERIFIERS,
                               ScoringSpec()))


def verified(text: str, author: str, *, tests: str | None = TESTS, written_by: str | None = None) -> Version:
    checks = [c.model_copy() for c in checks_of(text, tests)]
    return Version(written_by=written_by or author, content=text, checks=checks, score=score_checks(checks))


def pool(texts: list[str], **kw) -> list[Proposal]:
    out = []
    for i, text in enumerate(texts):
        v = verified(text, f"agent-{i + 1}", **kw)
        out.append(Proposal(author=f"agent-{i + 1}", content=text, versions=[v], checks=v.checks, score=v.score))
    return out


def winner(proposals: list[Proposal], salt: str = "d1", **kw) -> str:
    decide(proposals, salt=salt, **kw)
    return min(proposals, key=lambda p: p.rank).content


def test_skipped_checks_do_not_count():
    checks = [CheckResult(name="a", status="passed", message=""), CheckResult(name="b", status="skipped", message="")]
    assert score_checks(checks) == 1.0
    assert score_checks([CheckResult(name="b", status="skipped", message="")]) is None
    checks.append(CheckResult(name="c", status="failed", message="", weight=3))
    assert score_checks(checks) == pytest.approx(0.25)


def test_lorem_ipsum_does_not_score_like_a_correct_answer():
    lorem, correct = verified(LOREM, "a"), verified(CORRECT, "b")
    assert verifier_key(correct) > verifier_key(lorem)
    assert any(c.failed for c in lorem.checks)
    assert {c.name: c.status for c in correct.checks}["python.tests"] == "passed"


def test_code_checks_are_skipped_without_code_and_tests_fail_without_code():
    prose = {c.name: c for c in verified(PROSE, "a", tests=None).checks}
    assert prose["python.parse"].status == "skipped" and prose["python.parse"].message
    with_tests = {c.name: c for c in verified(PROSE, "a").checks}
    assert with_tests["python.tests"].status == "failed"


@pytest.mark.parametrize("bad", BAD, ids=["case", "wrong", "broken", "undefined", "lorem", "echo", "empty-block",
                                          "prose", "blank"])
@pytest.mark.parametrize("good", GOOD, ids=["correct", "correct-too"])
def test_a_passing_proposal_always_beats_a_failing_one(good, bad):
    for order in (["good", "bad"], ["bad", "good"]):
        texts = [good if o == "good" else bad for o in order]
        assert winner(pool(texts)) == good


def test_echo_lorem_and_empty_block_never_outrank_a_correct_answer_without_tests():
    for bad in (LOREM, ECHO, EMPTY_BLOCK, BROKEN):
        for texts in ([bad, CORRECT], [CORRECT, bad]):
            assert winner(pool(texts, tests=None)) == CORRECT, bad


def test_selection_picks_a_correct_candidate_in_every_pool_that_has_one():
    rng = random.Random(7)
    pools = 0
    for size in (2, 3, 5):
        for combo in itertools.combinations(BAD + GOOD, size):
            if not set(combo) & set(GOOD):
                continue
            texts = list(combo)
            rng.shuffle(texts)
            pools += 1
            # votes and peer rank are noise here: random Borda points must not overturn the tests
            borda = {f"agent-{i + 1}": float(rng.randint(0, 4)) for i in range(size)}
            assert winner(pool(texts), salt=f"d{pools}", borda=borda) in GOOD, texts
    assert pools > 100


def test_tie_break_is_stable_and_not_seat_order():
    firsts = set()
    for salt in range(20):
        proposals = pool([CORRECT, CORRECT_TOO])
        first = winner(proposals, salt=f"delib-{salt}")
        assert first == winner(pool([CORRECT, CORRECT_TOO]), salt=f"delib-{salt}")  # stable
        firsts.add(first)
    assert firsts == {CORRECT, CORRECT_TOO}  # not always seat 1


def test_decided_by_and_reasons():
    proposals = pool([WRONG, CORRECT])
    verdicts, step, why = decide(proposals, salt="x")
    assert step == "verifiers" and "tests 3/3" in why and "tests 1/3" in why
    assert verdicts[0].tests_passed == 3 and all(v.reason for v in verdicts)
    _, step, _ = decide(pool([CORRECT, CORRECT_TOO]), salt="x", borda={"agent-1": 1.0, "agent-2": 0.0})
    assert step == "peer_rank"
    _, step, _ = decide(pool([CORRECT]), salt="x")
    assert step == "only_candidate"


def test_votes_rank_after_verifiers():
    a = Proposal(author="a", content="41", versions=[Version(written_by="a", content="41", answer="41")])
    b = Proposal(author="b", content="42", versions=[Version(written_by="b", content="42", answer="42")])
    c = Proposal(author="c", content="so 42", versions=[Version(written_by="c", content="so 42", answer="42")])
    verdicts, step, why = decide([a, b, c], salt="s", votes={"41": 1, "42": 2}, borda={"a": 9.0})
    # The votes separate the winner from the best candidate with another answer; the peers only chose between
    # the two texts that answer 42, and the reason says both.
    assert verdicts[0].answer == "42" and verdicts[-1].answer == "41" and step == "votes"
    assert "peer rank put it first" in why or "stable hash picked it" in why
    assert a.rank == 3


def test_every_version_is_a_candidate_and_the_critic_is_credited():
    p = Proposal(author="a", content=CORRECT, versions=[verified(CORRECT, "a"),
                                                         verified(WRONG, "a", written_by="b")])
    q = Proposal(author="b", content=WRONG, versions=[verified(WRONG, "b"), verified(CORRECT_TOO, "b", written_by="a")])
    verdicts, _, _ = decide([p, q], salt="s")
    assert len(verdicts) == 4
    assert {(v.proposal, v.version, v.written_by) for v in verdicts[:2]} == {("a", 0, "a"), ("b", 1, "a")}
    assert p.chosen == 0 and q.chosen == 1 and q.content == CORRECT_TOO


def test_a_revision_that_fails_a_check_its_original_passed_does_not_displace_it():
    original, worse, better = verified(CASE_SENSITIVE, "a"), verified(BROKEN, "a"), verified(CORRECT, "a")
    assert not displaces(worse, original)
    assert displaces(better, original)


def test_only_a_version_that_passes_every_test_settles_the_decision():
    # What stops the drafting and the rounds: a version that passes the request's tests, nothing less.
    assert [passes_tests(verified(t, "a")) for t in GOOD] == [True, True]
    assert not any(passes_tests(verified(t, "a")) for t in BAD)
    assert not passes_tests(verified(CORRECT, "a", tests=None))  # no tests ran: nothing proven
    assert settled(pool([WRONG, PROSE, CORRECT])) and not settled(pool(BAD))
    # A later version that passes counts as much as a first draft.
    p = pool([WRONG])[0]
    p.versions.append(verified(CORRECT, "a", written_by="critic"))
    assert settled([p])


def test_undecided_when_the_top_ties_on_verifiers_and_votes():
    assert undecided(pool([CORRECT, CORRECT_TOO, WRONG]))  # two pass every test
    assert not undecided(pool([CORRECT, CASE_SENSITIVE, WRONG]))  # one verifies best
    # Votes break the verifiers' tie: a proposal whose answer has the most votes is decided; two proposals
    # with the same top answer tie (the peers choose the text).
    three = pool([PROSE, PROSE, PROSE], tests=None)
    for p, answer in zip(three, ["42", "41", "40"]):
        p.versions[0].answer = answer
    assert not undecided(three, {"42": 2, "41": 1, "40": 1})
    three[1].versions[0].answer = "42"
    assert undecided(three, {"42": 2, "40": 1})
