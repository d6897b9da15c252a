"""Scoring a version from its verifier checks, and the one decision rule over every candidate.

Plain functions: no engine, no I/O, so a decision can be recomputed anywhere from a record.

The rule, in order (each step only breaks the ties the previous one left):
1. verifiers: a version that passes every test beats one that does not; then the share of tests
   passed; then fewer failed checks; then the weighted score of the checks that applied;
2. votes (exact-answer tasks): how many candidates gave an equivalent final answer;
3. peer rank: the Borda points the proposal's version earned from the other agents;
4. a stable tie-break that is not seat order: a hash of the deliberation id and the candidate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .models.records import CandidateVerdict, CheckResult, DecidedBy, Proposal, Version

TESTS_CHECK = "python.tests"


def score_checks(checks: list[CheckResult]) -> float | None:
    """Weighted share of passed checks among those that applied (skipped ones do not count);
    None when no check applied. A negative weight counts as 0."""
    applied = [c for c in checks if c.status != "skipped"]
    total = sum(max(c.weight, 0.0) for c in applied)
    if not applied or total <= 0:
        return None
    return sum(max(c.weight, 0.0) for c in applied if c.passed) / total


def tests_of(checks: list[CheckResult]) -> tuple[int, int] | None:
    """(passed, total) of the test check when tests applied; a failed test check with no count
    (no code to test) is (0, 1)."""
    for c in checks:
        if c.name == TESTS_CHECK and c.status != "skipped":
            if c.tests_total:
                return c.tests_passed or 0, c.tests_total
            return (1, 1) if c.passed else (0, 1)
    return None


def verifier_key(version: Version) -> tuple:
    """Bigger is better: (passes every test, share of tests passed, -failed checks, score)."""
    tests = tests_of(version.checks)
    ratio = 1.0 if tests is None else tests[0] / tests[1]
    failed = sum(1 for c in version.checks if c.failed)
    return (ratio == 1.0, ratio, -failed, version.score if version.score is not None else 0.0)


def best_version(versions: list[Version]) -> int:
    """Index of the best-verified version (the first of equals): what a proposal stands for after drafting."""
    return max(range(len(versions)), key=lambda i: verifier_key(versions[i]))


def displaces(new: Version, current: Version) -> bool:
    """Whether a revision replaces the version its proposal stands for: never when it fails a check
    the current one passed, nor when it verifies worse."""
    lost = {c.name for c in current.checks if c.passed} & {c.name for c in new.checks if c.failed}
    return not lost and verifier_key(new) >= verifier_key(current)


def all_verified(proposals: list[Proposal]) -> bool:
    """Every proposal's version passes every check that applied, and at least one check beyond the
    content checks applied to each (without an artifact to verify there is nothing to stop on)."""
    for p in proposals:
        checks = p.current.checks
        if any(c.failed for c in checks):
            return False
        if not any(c.passed and not c.name.startswith("content.") for c in checks):
            return False
    return True


def passes_tests(version: Version) -> bool:
    """The request's tests ran on this version and all passed, and no other check failed."""
    tests = tests_of(version.checks)
    return tests is not None and tests[0] == tests[1] and not any(c.failed for c in version.checks)


def settled(proposals: list[Proposal]) -> bool:
    """Some version of some proposal passes the request's tests: the verifiers have a winner, and no
    later draft, revision or ranking can beat it under the rule below (at best it would tie)."""
    return any(passes_tests(v) for p in proposals for v in p.versions)


def undecided(proposals: list[Proposal], votes: dict[str, int] | None = None) -> bool:
    """Two or more proposals tie at the top on verifiers and votes (each by its best version): what
    only a peer ranking (or the hash tie-break) can separate."""
    def best(p: Proposal) -> tuple:
        return max((verifier_key(v), _votes_for(v, votes) or 0) for v in p.versions)

    keys = sorted((best(p) for p in proposals if p.versions), reverse=True)
    return len(keys) >= 2 and keys[0] == keys[1]


def _votes_for(version: Version, votes: dict[str, int] | None) -> int | None:
    if votes is None:
        return None
    return votes.get(version.answer, 0) if version.answer is not None else 0


@dataclass
class _Entry:
    proposal: Proposal
    index: int
    version: Version
    votes: int | None
    borda: float | None
    tie: str

    def key(self) -> tuple:
        return (verifier_key(self.version), self.votes or 0, self.borda or 0.0, self.tie)


def _tie(salt: str, author: str, index: int) -> str:
    return hashlib.sha256(f"{salt}\0{author}\0{index}".encode()).hexdigest()


def _describe(e: _Entry) -> str:
    parts = []
    tests = tests_of(e.version.checks)
    if tests is not None:
        parts.append(f"tests {tests[0]}/{tests[1]}")
    failed = [c.name for c in e.version.checks if c.failed]
    parts.append("failed " + ", ".join(failed) if failed else "no failed check")
    if e.version.score is not None:
        parts.append(f"score {e.version.score:.2f}")
    if e.votes is not None:
        parts.append(f"{e.votes} vote(s) for {e.version.answer!r}" if e.version.answer is not None else "no answer found")
    if e.borda is not None:
        parts.append(f"peer Borda {e.borda:g}")
    return "; ".join(parts)


def _deciding_step(a: _Entry, b: _Entry) -> DecidedBy:
    if verifier_key(a.version) != verifier_key(b.version):
        return "verifiers"
    if (a.votes or 0) != (b.votes or 0):
        return "votes"
    if (a.borda or 0.0) != (b.borda or 0.0):
        return "peer_rank"
    return "tie_break"


def decide(proposals: list[Proposal], *, salt: str, votes: dict[str, int] | None = None,
           borda: dict[str, float] | None = None) -> tuple[list[CandidateVerdict], DecidedBy, str]:
    """Rank every version of every proposal by the rule above.

    votes: answer -> number of candidates that gave it (None: not an exact-answer task);
    borda: proposal author -> Borda points of the version it stood for when peers ranked it.
    Sets each proposal's `chosen` to its best-ranked version (and content/checks/score with it),
    its `rank` and `reason`, and reorders nothing: returns the verdicts, the step that decided
    between the winner and the runner-up, and a sentence saying why the winner won.
    """
    entries = []
    for p in proposals:
        for i, v in enumerate(p.versions):
            entries.append(_Entry(
                proposal=p, index=i, version=v,
                votes=_votes_for(v, votes),
                borda=None if borda is None else borda.get(p.author, 0.0) if i == p.chosen else 0.0,
                tie=_tie(salt, p.author, i)))
    entries.sort(key=lambda e: e.key(), reverse=True)

    verdicts = []
    for rank, e in enumerate(entries, 1):
        tests = tests_of(e.version.checks)
        verdicts.append(CandidateVerdict(
            proposal=e.proposal.author, version=e.index, written_by=e.version.written_by, rank=rank,
            score=e.version.score, checks_failed=sum(1 for c in e.version.checks if c.failed),
            tests_passed=tests[0] if tests else None, tests_total=tests[1] if tests else None,
            answer=e.version.answer, votes=e.votes, borda=e.borda, reason=_describe(e)))

    # Each proposal now stands for its best-ranked version; proposals rank by it.
    seen: dict[str, int] = {}
    for e in entries:
        if e.proposal.author not in seen:
            seen[e.proposal.author] = len(seen) + 1
            p = e.proposal
            p.chosen, p.content, p.checks, p.score = e.index, e.version.content, e.version.checks, e.version.score
            p.rank, p.reason = seen[p.author], _describe(e)

    if len(entries) == 1:
        return verdicts, "only_candidate", "the only candidate"
    win, runner = entries[0], entries[1]
    step = _deciding_step(win, runner)
    who = f"{win.proposal.author} v{win.index}"
    other = f"{runner.proposal.author} v{runner.index}"
    if step == "verifiers":
        why = f"{who} verifies better than {other} ({_describe(win)} against {_describe(runner)})"
    elif step == "votes":
        why = (f"{who} verifies as well as {other}, and its answer {win.version.answer!r} has the most votes "
               f"({win.votes} against {runner.votes})")
    elif step == "peer_rank":
        why = (f"{who} ties {other} on verifiers and votes; the other agents ranked it higher "
               f"(Borda {win.borda or 0:g} against {runner.borda or 0:g})")
    else:
        why = (f"{who} ties {other} on verifiers, votes and peer rank; a stable hash of the deliberation id and "
               "the candidate broke the tie")
    return verdicts, step, why


def rank_proposals(proposals: list[Proposal]) -> list[Proposal]:
    """Deep copies of the proposals in rank order (rank set by `decide`)."""
    return [p.model_copy(deep=True) for p in sorted(proposals, key=lambda p: p.rank or len(proposals) + 1)]
