"""Every data shape the project exchanges: specs, requests, records, application config.

One pydantic v2 module shared by the actors, the protocol and the ingress, so a value
that validated at the HTTP edge is the same value a council stores in Valkey.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Role names end up in actor names and Valkey keys: validate before they reach either.
ROLE_PATTERN = r"^[A-Z][A-Z0-9_]{0,31}$"
ENGINE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DEFAULT_ROLES = ("DEV", "QA", "ARCHITECT", "DEVOPS", "DATA")

Status = Literal["pending", "in_progress", "completed", "failed", "timeout"]
FINISHED: frozenset[str] = frozenset({"completed", "failed", "timeout"})


def now() -> float:
    return time.time()


class Strict(BaseModel):
    """Unknown fields are errors: a typo in a config or a request must not pass silently."""

    model_config = ConfigDict(extra="forbid")


class Limits(Strict):
    """Input limits, enforced by the request models and the ingress."""

    max_task_chars: int = Field(8000, ge=1)
    max_rubric_chars: int = Field(4000, ge=0)
    max_agents: int = Field(16, ge=1, le=64)
    max_rounds: int = Field(5, ge=0, le=10)
    max_tokens: int = Field(2048, ge=1)
    max_body_bytes: int = Field(256 * 1024, ge=1024)


LIMITS = Limits()


class EngineSpec(Strict):
    name: str = Field(pattern=ENGINE_NAME_PATTERN)
    backend: Literal["vllm", "openai"] = "vllm"
    model: str = Field(min_length=1, description="HF model id or local path (vllm); model name (openai)")
    served_model_name: str | None = None
    dtype: str = "auto"
    max_model_len: int = Field(2048, ge=128)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    num_gpus: float = Field(0, ge=0)
    num_cpus: float = Field(1, ge=0)
    max_num_seqs: int = Field(64, ge=1)
    enable_prefix_caching: bool = True
    base_url: str | None = None
    api_key_env: str | None = None

    @model_validator(mode="after")
    def _openai_needs_url(self) -> "EngineSpec":
        if self.backend == "openai" and not self.base_url:
            raise ValueError("engine backend 'openai' needs base_url")
        return self


class AgentSpec(Strict):
    id: str = Field(pattern=AGENT_ID_PATTERN)
    engine: str = Field(pattern=ENGINE_NAME_PATTERN)
    persona: str = Field("", max_length=4000)
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(256, ge=1, le=LIMITS.max_tokens)
    seed: int | None = None


class ScoringSpec(Strict):
    """Weights of the check suite; a check missing here weighs 1."""

    weights: dict[str, float] = Field(default_factory=dict)
    min_chars: int = Field(20, ge=0)
    max_chars: int = Field(20000, ge=1)


class CouncilSpec(Strict):
    role: str = Field(pattern=ROLE_PATTERN)
    agents: list[AgentSpec] = Field(min_length=1, max_length=LIMITS.max_agents)
    rounds: int = Field(1, ge=0, le=LIMITS.max_rounds)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    version: int = 1
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)

    @field_validator("agents")
    @classmethod
    def _unique_ids(cls, agents: list[AgentSpec]) -> list[AgentSpec]:
        ids = [a.id for a in agents]
        if len(ids) != len(set(ids)):
            raise ValueError("agent ids must be unique within a council")
        return agents


class CouncilUpsert(Strict):
    """Body of PUT /v1/councils/{role}: the role comes from the path, versions and times from the store."""

    agents: list[AgentSpec] = Field(min_length=1, max_length=LIMITS.max_agents)
    rounds: int = Field(1, ge=0, le=LIMITS.max_rounds)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)


class Constraints(Strict):
    rubric: str = Field("", max_length=LIMITS.max_rubric_chars)
    requirements: list[str] = Field(default_factory=list, max_length=32)
    metadata: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(300, gt=0, le=3600)

    @field_validator("requirements")
    @classmethod
    def _short_requirements(cls, reqs: list[str]) -> list[str]:
        for r in reqs:
            if not r.strip() or len(r) > 500:
                raise ValueError("each requirement must be 1..500 non-blank characters")
        return reqs


class DeliberationRequest(Strict):
    role: str = Field(pattern=ROLE_PATTERN)
    task: str = Field(min_length=1, max_length=LIMITS.max_task_chars)
    constraints: Constraints = Field(default_factory=Constraints)
    rounds: int | None = Field(None, ge=0, le=LIMITS.max_rounds)
    num_agents: int | None = Field(None, ge=1, le=LIMITS.max_agents)
    max_tokens: int | None = Field(None, ge=1, le=LIMITS.max_tokens)

    @field_validator("task")
    @classmethod
    def _not_blank(cls, task: str) -> str:
        if not task.strip():
            raise ValueError("task must not be blank")
        return task


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
    completion_tokens: int = 0
    finish_reason: str | None = None

    @property
    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)


class CheckResult(Strict):
    name: str
    passed: bool
    message: str
    weight: float = 1.0


class Revision(Strict):
    round: int
    critic: str
    critique: str
    content: str


class Proposal(Strict):
    author: str
    content: str
    revisions: list[Revision] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)
    score: float | None = None
    rank: int | None = None
    usage: Usage = Field(default_factory=Usage)


class DeliberationResult(Strict):
    proposals: list[Proposal]  # ranked, rank 1 first
    winner_id: str
    duration_s: float
    usage: Usage


class DeliberationRecord(Strict):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    request: DeliberationRequest
    status: Status = "pending"
    council_version: int | None = None
    # Stages finished so far, in order ("propose", "critique-1", "revise-1", ..., "score"),
    # and the working proposals after the last of them: a restarted council resumes here.
    stages_done: list[str] = Field(default_factory=list)
    proposals: list[Proposal] = Field(default_factory=list)
    # Critiques of the round in progress, kept between its critique and revise stages.
    pending_critiques: list[str] = Field(default_factory=list)
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


class DefaultCouncils(Strict):
    """Councils the ingress creates when the registry is empty."""

    roles: list[str] = Field(default_factory=lambda: list(DEFAULT_ROLES))
    agents_per_council: int = Field(3, ge=1, le=LIMITS.max_agents)
    engine: str = Field(pattern=ENGINE_NAME_PATTERN)
    rounds: int = Field(1, ge=0, le=LIMITS.max_rounds)
    max_tokens: int = Field(256, ge=1, le=LIMITS.max_tokens)

    @field_validator("roles")
    @classmethod
    def _valid_roles(cls, roles: list[str]) -> list[str]:
        import re

        bad = [r for r in roles if not re.match(ROLE_PATTERN, r)]
        if bad:
            raise ValueError(f"invalid role names {bad}; roles match {ROLE_PATTERN}")
        return roles


class AppConfig(Strict):
    """Arguments of the Serve application (`args:` in configs/*.yaml), checked by the typed builder."""

    valkey_url: str | None = Field(None, description="default: $COUNCILS_VALKEY_URL")
    key_prefix: str = "councils:"
    engines: list[EngineSpec] = Field(min_length=1)
    default_councils: DefaultCouncils
    record_ttl_s: int = Field(3600, ge=1)
    council_max_concurrency: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _engine_known(self) -> "AppConfig":
        names = {e.name for e in self.engines}
        if self.default_councils.engine not in names:
            raise ValueError(
                f"default_councils.engine {self.default_councils.engine!r} is not among engines {sorted(names)}"
            )
        return self


PERSONAS = (
    "You are a pragmatic senior engineer. Prefer the simplest solution that works.",
    "You are a meticulous reviewer. Cover edge cases, errors and tests.",
    "You are a performance-minded engineer. Think about scale, cost and failure modes.",
    "You are a security-minded engineer. Think about inputs, secrets and permissions.",
    "You are a maintainability advocate. Favour clear names, small units and docs.",
)


def default_council(role: str, engine: str, n_agents: int = 3, rounds: int = 1, max_tokens: int = 256) -> CouncilSpec:
    agents = [
        AgentSpec(
            id=f"agent-{role.lower()}-{i + 1:03d}",
            engine=engine,
            persona=f"{PERSONAS[i % len(PERSONAS)]} Your role: {role}.",
            temperature=round(0.5 + 0.2 * (i % 3), 2),
            max_tokens=max_tokens,
            seed=1000 + i,
        )
        for i in range(n_agents)
    ]
    return CouncilSpec(role=role, agents=agents, rounds=rounds)
