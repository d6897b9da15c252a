"""Scoring a version from its verifier checks, and the one decision rule over every candidate.

Plain functions: no engine, no I/O, so a decision can be recomputed anywhere from a record.

The rule is a list of criteria (CRITERIA), in order; each only breaks the ties the previous ones left:
1. user tests: a version that passes every test of the request beats one that does not; then the share passed;
2. running code (code tasks only, see `answer_is_code`): a version with code that runs (a code check applied and
   passed, and none of NOT_RUNNING failed) beats one without: prose cannot win a code task, nor code that does
   not parse or raises when run;
3. static checks: fewer failed checks, then the weighted score of the checks that applied;
4. generated evidence: the sum of the `evidence` figures of the version's checks (0 when none carries one):
   the slot of the checks the council derives when the request has no tests (`generated.*`, e.g. agreement of
   behaviour on generated inputs); always below the user's own tests and the static checks;
5. votes (exact-answer tasks): how many candidates gave an equivalent final answer;
6. distinguishing inputs (S*-style): when two behaviour groups tie on all of the above, the agents judged their
   concrete outputs on the inputs where they differ (`tied_groups`, `distinguishing`); a version's figure is the
   number of those judgements its group won;
7. peer rank: the Borda points the proposal's version earned from the other agents;
8. a stable tie-break that is not seat order: a hash of the deliberation id and the candidate.

`decided_by` is the first criterion that separates the winner from the best candidate with a different *outcome*
(`outcome`: another test result, answer, check status or evidence), not from the runner-up, which may be a copy
of the winner; only when every candidate has the winner's outcome does the runner-up decide it.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .models.records import CandidateVerdict, CheckResult, DecidedBy, Judgement, Proposal, Version
from .models.requests import Constraints

TESTS_CHECK = "python.tests"
BEHAVIOUR_CHECK = "generated.behaviour_agreement"  # outputs on generated inputs (verifiers/behaviour.py)
GENERATED_TESTS_CHECK = "generated.tests"  # asserts the agents wrote, held or not (verifiers/behaviour.py)
GENERATED = "generated."  # evidence the council derives: weighed by `evidence`, never a static pass or fail
# Roles whose answers are code unless the council says otherwise (scoring.code_answers).
CODE_ROLES = frozenset({"DEV", "QA", "DATA"})
# The verifiers whose checks are about code that runs (as opposed to prose, config or data).
CODE_LANGUAGES = ("python", "shell", "sql")
# A failed check of these means the code does not run: it does not parse, or it raised when run.
# `python.runs` is the name reserved for a check that imports the code (runs it without calling anything).
NOT_RUNNING = frozenset({"python.parse", "python.runs", "shell.parse", "sql.parse", "sql.execute"})
MAX_JUDGED_INPUTS = 3  # distinguishing inputs shown to each judge of two tied behaviour groups
_FENCE = re.compile(r"```|~~~")


def answer_is_code(role: str, constraints: Constraints, configured: bool | None = None) -> bool:
    """Whether the answer to this request is code: yes with Python tests or an SQL schema to run it on; with an
    answer format, whether that format asks for a fenced block (an exact answer is not code); else the council's
    `scoring.code_answers`, else its role (CODE_ROLES)."""
    if (constraints.tests and constraints.tests.strip()) or (constraints.sql_schema and constraints.sql_schema.strip()):
        return True
    if constraints.answer_format:
        return bool(_FENCE.search(constraints.answer_format))
    if configured is not None:
        return configured
    return role in CODE_ROLES


def score_checks(checks: list[CheckResult]) -> float | None:
    """Weighted share of passed checks among those that applied (skipped ones do not count);
    None when no check applied. A negative weight counts as 0. Generated evidence (`generated.*`) is not a
    static check: it counts only through `evidence_of`."""
    applied = [c for c in checks if c.status != "skipped" and not c.name.startswith(GENERATED)]
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


def runs(checks: list[CheckResult]) -> bool:
    """The version holds code that runs: for some language, a code check applied and passed and none of that
    language's NOT_RUNNING checks failed."""
    for lang in CODE_LANGUAGES:
        applied = [c for c in checks if c.name.startswith(lang + ".") and c.status != "skipped"]
        if any(c.passed for c in applied) and not any(c.failed and c.name in NOT_RUNNING for c in applied):
            return True
    return False


def evidence_of(checks: list[CheckResult]) -> float:
    """Generated evidence of a version: the sum of its checks' `evidence` figures (0 when none carries one)."""
    return sum(c.evidence for c in checks if c.evidence is not None and c.status != "skipped")


def _tests_key(checks: list[CheckResult]) -> tuple:
    tests = tests_of(checks)
    ratio = 1.0 if tests is None else tests[0] / tests[1]
    return (ratio == 1.0, ratio)


def _failed(checks: list[CheckResult]) -> list[CheckResult]:
    """The failed static checks (an agent-written assert that does not hold is evidence, not a failure)."""
    return [c for c in checks if c.failed and not c.name.startswith(GENERATED)]


def _static_key(version: Version) -> tuple:
    return (-len(_failed(version.checks)), version.score if version.score is not None else 0.0)


def verifier_key(version: Version, code: bool = False) -> tuple:
    """Bigger is better: (passes every test, share of tests passed, code runs (code tasks), -failed checks, score)."""
    return (*_tests_key(version.checks), code and runs(version.checks), *_static_key(version))


def best_version(versions: list[Version], code: bool = False) -> int:
    """Index of the best-verified version (the first of equals): what a proposal stands for after drafting."""
    return max(range(len(versions)), key=lambda i: (verifier_key(versions[i], code), evidence_of(versions[i].checks)))


def displaces(new: Version, current: Version, code: bool = False) -> bool:
    """Whether a revision replaces the version its proposal stands for: never when it fails a check
    the current one passed, nor when it verifies worse."""
    lost = {c.name for c in current.checks if c.passed} & {c.name for c in _failed(new.checks)}
    return not lost and verifier_key(new, code) >= verifier_key(current, code)


def all_verified(proposals: list[Proposal]) -> bool:
    """Every proposal's version passes every check that applied, and at least one check beyond the
    content checks applied to each (without an artifact to verify there is nothing to stop on)."""
    for p in proposals:
        checks = p.current.checks
        if _failed(checks):
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


def behaviour_majority(proposals: list[Proposal], at_least: int = 3) -> bool:
    """One behaviour group (generated.behaviour_agreement) holds more than half of the versions drawn so far,
    and at least `at_least` of them: the execution evidence already agrees, more drafts rarely change it."""
    versions = [v for p in proposals for v in p.versions]
    groups = Counter(c.group for v in versions for c in v.checks if c.name == BEHAVIOUR_CHECK and c.group)
    if not groups:
        return False
    top = groups.most_common(1)[0][1]
    return top >= at_least and 2 * top > len(versions)


def undecided(proposals: list[Proposal], votes: dict[str, int] | None = None, code: bool = False) -> bool:
    """Two or more proposals tie at the top on verifiers, generated evidence and votes (each by its best
    version): what only a peer ranking (or the hash tie-break) can separate."""
    def best(p: Proposal) -> tuple:
        return max((verifier_key(v, code), evidence_of(v.checks), _votes_for(v, votes) or 0) for v in p.versions)

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
    code: bool
    judged: int | None = None

    @property
    def label(self) -> str:
        return f"{self.proposal.author} v{self.index}"


def _tie(salt: str, author: str, index: int) -> str:
    return hashlib.sha256(f"{salt}\0{author}\0{index}".encode()).hexdigest()


def _tests_figure(e: _Entry) -> str:
    tests = tests_of(e.version.checks)
    return "no tests ran" if tests is None else f"tests {tests[0]}/{tests[1]}"


def _static_figure(e: _Entry) -> str:
    failed = [c.name for c in _failed(e.version.checks)]
    text = "failed " + ", ".join(failed) if failed else "no failed check"
    return text + (f", score {e.version.score:.2f}" if e.version.score is not None else "")


def _votes_figure(e: _Entry) -> str:
    if e.version.answer is None:
        return "no answer found"
    return f"{e.votes or 0} vote(s) for {e.version.answer!r}"


@dataclass(frozen=True)
class Criterion:
    """One step of the decision rule: its name in a reason, the `decided_by` it reports, a candidate's value on it
    (bigger is better) and the figure a reason shows for it."""

    name: str
    decided_by: DecidedBy
    value: Callable[[_Entry], object]
    figure: Callable[[_Entry], str]


# The decision order: user tests > running code and static failures > generated evidence > votes > distinguishing
# inputs > peer rank > stable tie-break. A new kind of evidence goes in its slot here (or carries `evidence` on its checks).
CRITERIA: tuple[Criterion, ...] = (
    Criterion("user tests", "verifiers", lambda e: _tests_key(e.version.checks), _tests_figure),
    Criterion("running code", "verifiers", lambda e: e.code and runs(e.version.checks),
              lambda e: "code that runs" if runs(e.version.checks) else "no code that runs"),
    Criterion("static checks", "verifiers", lambda e: _static_key(e.version), _static_figure),
    Criterion("generated evidence", "generated_evidence", lambda e: evidence_of(e.version.checks),
              lambda e: f"generated evidence {evidence_of(e.version.checks):g}"),
    Criterion("votes", "votes", lambda e: e.votes or 0, _votes_figure),
    Criterion("distinguishing inputs", "distinguishing_inputs", lambda e: e.judged or 0,
              lambda e: f"{e.judged or 0} judgement(s) of its outputs on distinguishing inputs"),
    Criterion("peer rank", "peer_rank", lambda e: e.borda or 0.0, lambda e: f"peer Borda {e.borda or 0:g}"),
    Criterion("tie-break", "tie_break", lambda e: e.tie, lambda e: "a stable hash"),
)


def _key(e: _Entry) -> tuple:
    return tuple(c.value(e) for c in CRITERIA)


def outcome(version: Version) -> tuple:
    """What a candidate's result is, apart from its text: its test result, final answer, and every check's status
    and evidence. Candidates with the same outcome are interchangeable for the verifiers, evidence and votes."""
    checks = sorted((c.name, c.status, c.evidence, c.group) for c in version.checks if c.status != "skipped")
    return tests_of(version.checks), version.answer, tuple(map(str, checks))


def _separating(a: _Entry, b: _Entry) -> Criterion:
    """The first criterion on which a and b differ (the tie-break, if no other)."""
    return next((c for c in CRITERIA if c.value(a) != c.value(b)), CRITERIA[-1])


def _describe(e: _Entry) -> str:
    parts = []
    if tests_of(e.version.checks) is not None:
        parts.append(_tests_figure(e))
    if e.code:
        parts.append("code that runs" if runs(e.version.checks) else "no code that runs")
    parts.append(_static_figure(e).replace(", score", "; score"))
    if any(c.evidence is not None for c in e.version.checks):
        parts.append(f"generated evidence {evidence_of(e.version.checks):g}")
    if e.votes is not None:
        parts.append(_votes_figure(e))
    if e.judged is not None:
        parts.append(f"{e.judged} judgement(s) won on distinguishing inputs")
    if e.borda is not None:
        parts.append(f"peer Borda {e.borda:g}")
    return "; ".join(parts)


def _versus(crit: Criterion, a: _Entry, b: _Entry) -> str:
    if crit.decided_by == "tie_break":
        return "they tie on every other criterion, and a stable hash of the deliberation id and the candidate broke the tie"
    return f"{crit.name}: {crit.figure(a)} against {crit.figure(b)}"


def decide(proposals: list[Proposal], *, salt: str, votes: dict[str, int] | None = None,
           borda: dict[str, float] | None = None, code: bool = False,
           judged: dict[str, int] | None = None) -> tuple[list[CandidateVerdict], DecidedBy, str]:
    """Rank every version of every proposal by the rule above.

    votes: answer -> number of candidates that gave it (None: not an exact-answer task);
    borda: proposal author -> Borda points of the version it stood for when peers ranked it;
    judged: behaviour group -> judgements it won on distinguishing inputs (`judgement_points`; None: none ran);
    code: the answer is code (`answer_is_code`): a version without code that runs ranks below one with it.
    Sets each proposal's `chosen` to its best-ranked version (and content/checks/score with it),
    its `rank` and `reason`, and reorders nothing: returns the verdicts, the criterion that separated
    the winner from the best candidate with another outcome, and a sentence saying why the winner won.
    """
    entries = []
    for p in proposals:
        for i, v in enumerate(p.versions):
            entries.append(_Entry(
                proposal=p, index=i, version=v,
                votes=_votes_for(v, votes),
                borda=None if borda is None else borda.get(p.author, 0.0) if i == p.chosen else 0.0,
                tie=_tie(salt, p.author, i), code=code,
                judged=None if judged is None else judged.get(behaviour_group(v) or "", 0)))
    entries.sort(key=_key, reverse=True)

    verdicts = []
    for rank, e in enumerate(entries, 1):
        tests = tests_of(e.version.checks)
        verdicts.append(CandidateVerdict(
            proposal=e.proposal.author, version=e.index, written_by=e.version.written_by, rank=rank,
            score=e.version.score, checks_failed=len(_failed(e.version.checks)),
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
    return verdicts, *_why(entries)


def _why(entries: list[_Entry]) -> tuple[DecidedBy, str]:
    """The criterion that separated the winner from the best candidate with another outcome, and the reason."""
    win, runner = entries[0], entries[1]
    mine = outcome(win.version)
    rival = next((e for e in entries[1:] if outcome(e.version) != mine), None)
    if rival is None:
        crit = _separating(win, runner)
        return crit.decided_by, (f"every candidate has the same outcome ({_describe(win)}); {win.label} ranks above "
                                 f"{runner.label}: {_versus(crit, win, runner)}")
    crit = _separating(win, rival)
    other = rival.label if rival is runner else f"{rival.label}, the best candidate with another outcome,"
    why = f"{win.label} ranks above {other} on {_versus(crit, win, rival)}"
    if crit.decided_by == "tie_break":
        why = f"{win.label} ranks above {other}: {_versus(crit, win, rival)}"
    same = sum(1 for e in entries if outcome(e.version) == mine)
    if same > 1:
        inner = _separating(win, runner)
        pick = ("a stable hash picked it" if inner.decided_by == "tie_break"
                else f"{inner.name} put it first ({inner.figure(win)} against {inner.figure(runner)} for {runner.label})")
        why += f"; of the {same} candidates with its outcome, {pick}"
    return crit.decided_by, why


def rank_proposals(proposals: list[Proposal]) -> list[Proposal]:
    """Deep copies of the proposals in rank order (rank set by `decide`)."""
    return [p.model_copy(deep=True) for p in sorted(proposals, key=lambda p: p.rank or len(proposals) + 1)]


def agree(versions: Iterable[Version]) -> None:
    """Set each behaviour check's evidence from the candidate versions that behave the same (its group): a larger
    group of agreeing candidates is stronger evidence (execution-based majority, MBR-exec). Where agents wrote
    asserts (`generated.tests`), a bounded form of CodeT's dual agreement: group size × (1 + share of the asserts
    the group holds). A small model's asserts are often wrong, so they can at most double a group's weight: they
    order groups of equal size, and a group twice as large or more is never overturned by them."""
    versions = list(versions)
    sizes = Counter(c.group for v in versions for c in v.checks if c.name == BEHAVIOUR_CHECK and c.group)
    for v in versions:
        written = next((c for c in v.checks if c.name == GENERATED_TESTS_CHECK and c.tests_total), None)
        for c in v.checks:
            if c.name == BEHAVIOUR_CHECK and c.group:
                size = sizes[c.group]
                share = (written.tests_passed or 0) / written.tests_total if written else 0.0
                c.evidence = round(size * (1 + share), 3)
                note = f"{size} of {len(versions)} candidate(s) agree"
                if written:
                    note += (f" × (1 + {written.tests_passed or 0}/{written.tests_total} agent-written assert(s) held)"
                             f" = {c.evidence:g}")
                c.message = c.message.split(" [", 1)[0] + f" [{note}]"


# -- distinguishing inputs (S*): two tied behaviour groups, judged on the inputs where their outputs differ ------
def behaviour_group(version: Version) -> str | None:
    return next((c.group for c in version.checks if c.name == BEHAVIOUR_CHECK and c.group), None)


def _outputs(version: Version) -> dict[str, str]:
    check = next((c for c in version.checks if c.name == BEHAVIOUR_CHECK and c.outputs), None)
    return {call: out for call, out in check.outputs} if check else {}


def distinguishing(a: Version, b: Version, limit: int = MAX_JUDGED_INPUTS) -> list[tuple[str, str, str]]:
    """(call, a's output, b's output) on the inputs both ran where their outputs differ, at most `limit`."""
    ob = _outputs(b)
    return [(call, out, ob[call]) for call, out in _outputs(a).items() if call in ob and ob[call] != out][:limit]


def tied_groups(proposals: list[Proposal], votes: dict[str, int] | None = None,
                code: bool = False) -> tuple[Version, Version] | None:
    """The best versions of the two best behaviour groups, when nothing before the judgement separates them (the
    request's tests, running code, static checks, generated evidence, votes) and some input tells them apart;
    None otherwise. Groups are taken in a stable order (their ids), so a resumed stage judges the same pair."""
    best: dict[str, tuple[tuple, Version]] = {}
    for v in (v for p in proposals for v in p.versions):
        group = behaviour_group(v)
        if group is None:
            continue
        key = (verifier_key(v, code), evidence_of(v.checks), _votes_for(v, votes) or 0)
        if group not in best or key > best[group][0]:
            best[group] = (key, v)
    ranked = sorted(best.items(), key=lambda item: (item[1][0], item[0]), reverse=True)
    if len(ranked) < 2 or ranked[0][1][0] != ranked[1][1][0]:
        return None
    a, b = sorted([ranked[0], ranked[1]], key=lambda item: item[0])
    return (a[1][1], b[1][1]) if distinguishing(a[1][1], b[1][1]) else None


def judgement_points(judgements: list[Judgement]) -> dict[str, int] | None:
    """Behaviour group -> the judgements of single inputs it won (None when no judge answered)."""
    if not any(j.parsed for j in judgements):
        return None
    points = Counter(choice for j in judgements if j.parsed for choice in j.choices if choice)
    return {group: points.get(group, 0) for j in judgements for group in j.groups}
