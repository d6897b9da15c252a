"""What a deployment declares: engines, and councils of agents on them (specs stored in Valkey, PUT bodies).

`default_council` builds the councils the service creates by default, with their personas.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import AGENT_ID_PATTERN, ENGINE_NAME_PATTERN, ROLE_PATTERN, Strict, now
from .limits import CEILING_AGENTS, CEILING_DRAFTS, CEILING_ENGINE_REPLICAS, CEILING_MAX_TOKENS, CEILING_ROUNDS

# The verifiers a council may name (actors/verifiers/ maps each to its module and checks it has them all).
VERIFIER_NAMES: tuple[str, ...] = ("content", "python", "shell", "json", "yaml", "kubernetes", "dockerfile", "sql")


def validate_names(names: list[str]) -> None:
    """ValueError naming any verifier that does not exist."""
    unknown = [n for n in names if n not in VERIFIER_NAMES]
    if unknown:
        raise ValueError(f"unknown verifier(s): {', '.join(map(repr, unknown))}; known: {', '.join(VERIFIER_NAMES)}")


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
    replicas: int = Field(1, ge=1, le=CEILING_ENGINE_REPLICAS, description=(
        "engine actors serving this engine, spread over the nodes offering the engine resource; a deliberation "
        "sends all its calls to one replica (prefix cache), deliberations go to the least loaded one, and a dead "
        "replica's calls move to the others"))

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
    max_tokens: int = Field(256, ge=1, le=CEILING_MAX_TOKENS)
    seed: int | None = None


class ScoringSpec(Strict):
    """How a council judges proposals: which verifiers run (None: the role's defaults, see
    actors/verifiers), and the weights of their checks (a check missing here weighs 1)."""

    verifiers: list[str] | None = Field(None, max_length=32)
    weights: dict[str, float] = Field(default_factory=dict, max_length=64)
    # Each agent ranks the other proposals before the decision (councils of 3 agents or more):
    # "when_undecided" (default) only when the verifiers and votes leave the top tied and the request
    # carries no tests (tests that ran decide code better than a peer's opinion); "always"; "never".
    # true/false (the earlier boolean) mean "when_undecided"/"never".
    peer_rank: Literal["when_undecided", "always", "never"] = "when_undecided"
    # Whether this council's answers are code, so that an answer without code that runs never outranks one with
    # it (actors/scoring.py): None means the role decides (DEV, QA and DATA answer in code). Whatever this says, a
    # request with Python tests or an SQL schema is a code task, and one with an exact answer_format is not.
    code_answers: bool | None = None

    @field_validator("peer_rank", mode="before")
    @classmethod
    def _peer_rank_bool(cls, value: Any) -> Any:
        return {True: "when_undecided", False: "never"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("verifiers")
    @classmethod
    def _known_verifiers(cls, names: list[str] | None) -> list[str] | None:
        if names is not None:
            validate_names(names)
        return names
    min_chars: int = Field(20, ge=0)
    max_chars: int = Field(20000, ge=1)

    @field_validator("weights")
    @classmethod
    def _finite_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, w in weights.items():
            if not math.isfinite(w) or abs(w) > 1e6:  # inf would make every score NaN
                raise ValueError(f"weight of {name!r} must be a finite number within ±1e6")
        return weights


class CouncilSpec(Strict):
    role: str = Field(pattern=ROLE_PATTERN)
    agents: list[AgentSpec] = Field(min_length=1, max_length=CEILING_AGENTS)
    rounds: int = Field(1, ge=0, le=CEILING_ROUNDS)
    # Drafts each agent may write in the propose stage. With `constraints.tests` they are drawn one per
    # agent per wave, and the council stops drafting as soon as one passes the tests; otherwise all at once.
    drafts_per_agent: int = Field(1, ge=1, le=CEILING_DRAFTS)
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
    """Body of PUT /v1/councils/{role}: what GET /v1/councils/{role} returns is accepted back, edited or not.
    The role comes from the path (a `role` in the body must equal it); `version`, `created_at` and
    `updated_at` are read-only, accepted and ignored: the store keeps created_at and bumps the version."""

    role: str | None = Field(None, description="optional; must equal the role in the path")
    agents: list[AgentSpec] = Field(min_length=1, max_length=CEILING_AGENTS)
    rounds: int = Field(1, ge=0, le=CEILING_ROUNDS)
    drafts_per_agent: int = Field(1, ge=1, le=CEILING_DRAFTS)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    version: int | None = Field(None, description="read-only: ignored")
    created_at: float | None = Field(None, description="read-only: ignored")
    updated_at: float | None = Field(None, description="read-only: ignored")

    def spec_for(self, role: str) -> CouncilSpec:
        """The spec to store under the path's role; ValueError (naming body.role) if the body names another."""
        if self.role is not None and self.role != role:
            raise ValueError(f"body.role: {self.role!r} does not match the role in the path ({role!r})")
        return CouncilSpec(role=role, agents=self.agents, rounds=self.rounds, drafts_per_agent=self.drafts_per_agent,
                           scoring=self.scoring)


PERSONAS = (
    "You are a pragmatic senior engineer. Prefer the simplest solution that works.",
    "You are a meticulous reviewer. Cover edge cases, errors and tests.",
    "You are a performance-minded engineer. Think about scale, cost and failure modes.",
    "You are a security-minded engineer. Think about inputs, secrets and permissions.",
    "You are a maintainability advocate. Favour clear names, small units and docs.",
)


def default_council(role: str, engine: str, n_agents: int = 3, rounds: int = 1, max_tokens: int = 256,
                    drafts: int = 1) -> CouncilSpec:
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
    return CouncilSpec(role=role, agents=agents, rounds=rounds, drafts_per_agent=drafts)
