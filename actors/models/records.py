"""What a deliberation produces and keeps: the record stored in Valkey, its proposals, versions, checks,
rankings, timings and result, and an engine's completion with its token usage.

Records travel through Ray and Valkey as JSON; the `before` validators read records written by earlier versions.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Strict, now
from .requests import DeliberationRequest

Status = Literal["pending", "in_progress", "completed", "failed", "timeout"]
FailStatus = Literal["failed", "timeout"]  # how unfinished work ends (Store.fail_record)
FINISHED_STATUSES = ("completed", "failed", "timeout")  # also the kinds of a deliberation's last stage event
FINISHED: frozenset[str] = frozenset(FINISHED_STATUSES)


class Usage(Strict):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: "Usage") -> "Usage":
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class Completion(Strict):
    """What an engine returns for one prompt."""

    text: str
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the engine found in its prefix cache (vLLM's num_cached_tokens)
    completion_tokens: int = 0
    finish_reason: str | None = None

    @property
    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)


CheckStatus = Literal["passed", "failed", "skipped"]


class CheckResult(Strict):
    """One verifier check on one text. Skipped checks (not applicable: no code block, no tests...)
    carry their reason in `message` and do not count in the score."""

    name: str
    status: CheckStatus
    message: str
    weight: float = 1.0
    # Checks that run tests report how many passed.
    tests_passed: int | None = None
    tests_total: int | None = None
    duration_s: float | None = None
    # Generated evidence (checks the council derives when the request has no tests, e.g. agreement of behaviour
    # on generated inputs): a number, bigger is stronger. The decision sums it per candidate and ranks by it
    # after the static checks and before the votes (actors/scoring.py); None on every other check.
    evidence: float | None = None
    # Behaviour on generated inputs (generated.behaviour_agreement): candidates with the same group behaved the same,
    # and what it did on each input, [call, output] (clipped): where two groups differ, the agents judge the outputs.
    group: str | None = None
    outputs: list[list[str]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_boolean(cls, data: Any) -> Any:
        # Records written before checks could be skipped carry `passed: bool`.
        if isinstance(data, dict) and "passed" in data and "status" not in data:
            passed = data["passed"]
            data = {k: v for k, v in data.items() if k != "passed"}
            data["status"] = "passed" if passed else "failed"
        return data

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failed(self) -> bool:
        return self.status == "failed"


class Version(Strict):
    """One text of a proposal: its author's original (round 0) or a critic's revision (round k).
    Every version stays a candidate for the decision."""

    round: int = 0
    written_by: str
    critique: str | None = None  # the critique a revision answers
    content: str
    checks: list[CheckResult] = Field(default_factory=list)
    score: float | None = None  # weighted share of passed checks among those that applied
    answer: str | None = None  # the final answer, when the request declares answer_format


class Proposal(Strict):
    """Seat `author`'s line of work: its versions, and the one it stands for (`chosen`: the best
    verified so far; a revision that fails checks its predecessor passed never displaces it)."""

    author: str
    content: str  # versions[chosen].content
    versions: list[Version] = Field(default_factory=list)
    chosen: int = 0
    checks: list[CheckResult] = Field(default_factory=list)  # versions[chosen].checks
    score: float | None = None  # versions[chosen].score
    rank: int | None = None
    reason: str | None = None  # why it ranked where it did
    usage: Usage = Field(default_factory=Usage)

    @model_validator(mode="before")
    @classmethod
    def _from_revisions(cls, data: Any) -> Any:
        # Records written before versions were kept: the original text is lost, the revisions are not.
        if isinstance(data, dict) and "revisions" in data and "versions" not in data:
            data = dict(data)
            revisions = data.pop("revisions") or []
            data["versions"] = [{"round": 0, "written_by": data.get("author", ""), "content": data.get("content", "")}] + [
                {"round": r["round"], "written_by": r["critic"], "critique": r["critique"], "content": r["content"]}
                for r in revisions]
            data["chosen"] = len(data["versions"]) - 1
        return data

    @property
    def current(self) -> Version:
        return self.versions[self.chosen]


class PeerRanking(Strict):
    """One reviewer's ranking of the other proposals (anonymized for the reviewer), best first."""

    reviewer: str
    order: list[str]  # proposal authors, best first
    raw: str  # the reviewer's answer as generated
    parsed: bool  # False: the answer did not parse and `order` is the shuffled order it was shown


class Judgement(Strict):
    """One agent's verdict on the inputs where two tied behaviour groups differ (S*-style): per input, which
    group's output is right. Judged outputs are concrete values from running the candidates, not their texts."""

    judge: str
    groups: list[str]  # the two behaviour groups, as compared
    inputs: list[str]  # the calls on which they differ
    choices: list[str]  # per input, the group whose output the judge chose ("" when the answer did not say)
    raw: str  # the judge's answer as generated
    parsed: bool


class CandidateVerdict(Strict):
    """Where one version ranked in the decision, and why."""

    proposal: str  # author of the proposal line
    version: int
    written_by: str
    rank: int
    score: float | None = None
    checks_failed: int = 0
    tests_passed: int | None = None
    tests_total: int | None = None
    answer: str | None = None
    votes: int | None = None
    borda: float | None = None
    reason: str


DecidedBy = Literal["verifiers", "generated_evidence", "votes", "distinguishing_inputs", "peer_rank", "tie_break",
                    "only_candidate"]


class DeliberationResult(Strict):
    proposals: list[Proposal]  # ranked, rank 1 first; each stands for its chosen version
    winner_id: str  # author of the winning proposal
    winner_version: int = 0
    written_by: str | None = None  # who wrote the winning text: the author, or the critic who revised it
    decided_by: DecidedBy | None = None
    reason: str | None = None
    candidates: list[CandidateVerdict] = Field(default_factory=list)  # every version, ranked
    rankings: list[PeerRanking] = Field(default_factory=list)
    judgements: list[Judgement] = Field(default_factory=list)
    duration_s: float
    usage: Usage


def stage_kind(stage: str) -> str:
    """"critique-2" -> "critique": one series per kind of stage, whatever the number of rounds."""
    return stage.partition("-")[0]


class StageTiming(Strict):
    """Where one stage's time and tokens went (wall seconds; generation and verification overlap nothing)."""

    stage: str
    seconds: float = 0.0  # the whole stage, from start to its checkpoint written
    generation_s: float = 0.0
    verification_s: float = 0.0
    checkpoint_s: float = 0.0
    calls: int = 0
    # The batches the calls went in: each sent at once and awaited whole before the next (the propose stage's draft
    # waves). 0 in records written before batches were counted.
    batches: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # of prompt_tokens, found in the engine's prefix cache (not prefilled again)
    completion_tokens: int = 0


class DeliberationRecord(Strict):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    # Fences model text inside other prompts (protocol.fence); random, so no input can predict it.
    nonce: str = Field(default_factory=lambda: secrets.token_hex(8))
    request: DeliberationRequest
    status: Status = "pending"
    council_version: int | None = None
    # Stages finished so far, in order ("propose", "critique-1", "revise-1", ..., "score"),
    # and the working proposals after the last of them: a restarted council resumes here.
    stages_done: list[str] = Field(default_factory=list)
    proposals: list[Proposal] = Field(default_factory=list)
    # Asserts the council's test writer wrote in the propose stage when the answer is code and the request has no
    # tests (protocol.test_messages): their calls and expected values are generated evidence, never the user's tests.
    generated_tests: list[str] = Field(default_factory=list)
    # Critiques of the round in progress, kept between its critique and revise stages.
    pending_critiques: list[str] = Field(default_factory=list)
    # Peer rankings, once the rank stage ran; stages skipped by early stop (every proposal verified).
    rankings: list[PeerRanking] = Field(default_factory=list)
    # The rank stage's judgements of distinguishing inputs, when two behaviour groups tied at the top.
    judgements: list[Judgement] = Field(default_factory=list)
    stages_skipped: list[str] = Field(default_factory=list)
    # One entry per stage run (a stage replayed after a restart appears again).
    timings: list[StageTiming] = Field(default_factory=list)
    result: DeliberationResult | None = None
    error: str | None = None
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def deadline(self) -> float:
        return self.created_at + self.request.constraints.timeout_s
