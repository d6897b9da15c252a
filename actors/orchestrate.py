"""The architect step of /v1/orchestrate: choose one of the top k candidates of a finished deliberation.

Plain async Python on the protocol's Generator port (no Ray, no Valkey): the council actor hosts it,
tests drive it with tests/fakes.py. The architect is an LLM agent that must answer with one JSON object,
{"choice": <candidate number>, "reason": "..."}, parsed strictly. When the answer cannot be parsed, or
the engine call fails, the deterministic rule of the original orchestrator decides: the first candidate,
in rank order, whose checks all passed, else the best score. The outcome says which of the two decided.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Literal

from pydantic import Field

from .ports import Generator
from .protocol import fence
from .models.base import Strict
from .models.councils import AgentSpec
from .models.records import Proposal, Usage
from .models.requests import DeliberationRequest

DEFAULT_TOP_K = 3
MAX_TOP_K = 10

ARCHITECT_PERSONA = (
    "You are the lead software architect. You compare candidate solutions to a task and pick the one "
    "that solves it best. You answer with JSON only."
)
# The default engine is a 135M model with a 2048-token context: the whole prompt stays well under it.
TASK_CHARS = 600
CANDIDATES_CHARS = 2400  # shared by the candidates: 800 each for k=3, 240 each for k=10 (plus their fences)
CANDIDATE_MAX_CHARS = 1000
REASON_CHARS = 500
RAW_CHARS = 2000
ARCHITECT_MAX_TOKENS = 96
ARCHITECT_TIMEOUT_S = 120.0

_FENCED = re.compile(r"^```(?:json)?[ \t]*\n(.*)\n```$", re.DOTALL)


class NotOrchestrable(Exception):
    """orchestrate on a deliberation that is not there (status None: unknown or expired) or not completed."""

    def __init__(self, delib_id: str, status: str | None = None):
        super().__init__(delib_id, status)
        self.delib_id, self.status = delib_id, status

    def __str__(self) -> str:
        if self.status is None:
            return f"deliberation {self.delib_id} not found"
        return f"deliberation {self.delib_id} is {self.status}, not completed"


class ArchitectParseError(ValueError):
    """The architect's answer is not exactly one valid choice object."""


class OrchestrateRequest(DeliberationRequest):
    """Body of POST /v1/orchestrate: a deliberation request plus how many top candidates to consider."""

    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)


class Candidate(Strict):
    number: int  # 1-based, in rank order: what the architect answers with
    author: str
    content: str
    score: float | None
    rank: int | None
    checks_passed: bool
    failed_checks: list[str] = Field(default_factory=list)


class ArchitectAnswer(Strict):
    agent: str | None  # the council agent whose engine and seed the architect used
    engine: str | None
    raw: str | None  # the model's answer (clipped); None when the call itself failed
    parse_error: str | None
    usage: Usage = Field(default_factory=Usage)


class Orchestration(Strict):
    deliberation_id: str
    role: str
    top_k: int
    candidates: list[Candidate]
    choice: int  # the chosen candidate's number
    chosen: Candidate
    reason: str
    decided_by: Literal["architect", "fallback"]
    architect: ArchitectAnswer
    created_at: float = Field(default_factory=time.time)


def candidates_of(ranked: list[Proposal], top_k: int) -> list[Candidate]:
    """The first top_k proposals of a ranked result, numbered from 1."""
    out = []
    for number, p in enumerate(ranked[:top_k], 1):
        failed = [c.name for c in p.checks if c.failed]
        out.append(Candidate(number=number, author=p.author, content=p.content, score=p.score, rank=p.rank,
                             checks_passed=bool(p.checks) and not failed, failed_checks=failed))
    return out


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …[truncated]"


def architect_messages(request: DeliberationRequest, candidates: list[Candidate],
                       nonce: str) -> list[dict[str, str]]:
    """The architect's prompt. Each candidate is model text: fenced with the record's nonce (protocol.fence,
    the same fence as every proposal), so no candidate can close its block and pose as the instructions."""
    k = len(candidates)
    per = min(CANDIDATE_MAX_CHARS, CANDIDATES_CHARS // max(k, 1))
    blocks = []
    for c in candidates:
        checks = "all checks passed" if c.checks_passed else "failed: " + (", ".join(c.failed_checks) or "no checks")
        score = "n/a" if c.score is None else f"{c.score:.2f}"
        blocks.append(f"Candidate {c.number} (score {score}, {checks}):\n"
                      f"{fence(c.content, f'CANDIDATE {c.number}', nonce, per)}")
    user = (
        f"Task:\n{_clip(request.task, TASK_CHARS)}\n\n"
        "Candidates:\n\n" + "\n\n".join(blocks) + "\n\n"
        f"Choose the best candidate for the task. Answer with only this JSON object and nothing else:\n"
        f'{{"choice": <candidate number 1-{k}>, "reason": "<one sentence>"}}'
    )
    return [{"role": "system", "content": ARCHITECT_PERSONA}, {"role": "user", "content": user}]


def parse_choice(text: str, k: int) -> tuple[int, str]:
    """(choice, reason) from the architect's answer, or ArchitectParseError.

    Strict: the answer is one JSON object (alone, or alone inside one ```json fence) with exactly the
    keys "choice", an integer in 1..k, and "reason", a non-blank string. Anything else is refused.
    """
    body = text.strip()
    fenced = _FENCED.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body:
        raise ArchitectParseError("empty answer")
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise ArchitectParseError(f"not a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ArchitectParseError(f"not a JSON object but {type(value).__name__}")
    keys = set(value)
    if keys != {"choice", "reason"}:
        missing, extra = sorted({"choice", "reason"} - keys), sorted(keys - {"choice", "reason"})
        raise ArchitectParseError(f"keys must be exactly choice and reason (missing {missing}, unexpected {extra})")
    choice, reason = value["choice"], value["reason"]
    if isinstance(choice, bool) or not isinstance(choice, int):
        raise ArchitectParseError(f"choice must be an integer, got {choice!r}")
    if not 1 <= choice <= k:
        raise ArchitectParseError(f"choice {choice} is outside 1..{k}")
    if not isinstance(reason, str) or not reason.strip():
        raise ArchitectParseError("reason must be a non-blank string")
    return choice, _clip(reason, REASON_CHARS)


def fallback_choice(candidates: list[Candidate]) -> tuple[int, str]:
    """The original rule: the first candidate in rank order whose checks all passed, else the best score."""
    for c in candidates:
        if c.checks_passed:
            return c.number, f"first candidate in rank order whose checks all passed (rank {c.rank})"
    best = max(candidates, key=lambda c: (c.score if c.score is not None else -1.0, -c.number))
    return best.number, f"no candidate passed every check; best score ({best.score})"


async def choose(
    delib_id: str,
    request: DeliberationRequest,
    ranked: list[Proposal],
    agent: AgentSpec | None,
    generator: Generator,
    *,
    top_k: int = DEFAULT_TOP_K,
    timeout_s: float = ARCHITECT_TIMEOUT_S,
    nonce: str,
) -> Orchestration:
    """Ask the architect to choose among the top_k ranked proposals; fall back to the rule when it cannot.
    `nonce`: the deliberation record's, which fences the candidates in the prompt."""
    if not ranked:
        raise ValueError(f"deliberation {delib_id} has no proposals to choose from")
    candidates = candidates_of(ranked, top_k)
    raw: str | None = None
    usage = Usage()
    try:
        if agent is None:
            raise RuntimeError("the council has no agent to act as architect")
        completion = await asyncio.wait_for(
            generator.generate(agent.engine, architect_messages(request, candidates, nonce),
                               temperature=0.0, max_tokens=ARCHITECT_MAX_TOKENS, seed=agent.seed),
            timeout=timeout_s,
        )
        raw, usage = completion.text, completion.usage
        choice, reason = parse_choice(raw, len(candidates))
        decided_by, error = "architect", None
    except ArchitectParseError as exc:
        decided_by, error = "fallback", f"unparseable architect answer: {exc}"
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # engine down, timeout, no agent: the rule still decides
        decided_by, error = "fallback", f"architect call failed: {type(exc).__name__}: {exc}"
    if decided_by == "fallback":
        choice, reason = fallback_choice(candidates)
    return Orchestration(
        deliberation_id=delib_id,
        role=request.role,
        top_k=top_k,
        candidates=candidates,
        choice=choice,
        chosen=candidates[choice - 1],
        reason=reason,
        decided_by=decided_by,
        architect=ArchitectAnswer(agent=agent.id if agent else None, engine=agent.engine if agent else None,
                                  raw=None if raw is None else _clip(raw, RAW_CHARS), parse_error=error,
                                  usage=usage),
    )
