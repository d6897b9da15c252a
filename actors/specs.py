"""Every data shape the project exchanges: specs, requests, records, application config.

One pydantic v2 module shared by the actors, the protocol and the ingress, so a value
that validated at the HTTP edge is the same value a council stores in Valkey.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import topology

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


# Hard ceilings: the most the request models (and so the stored records) accept, whatever the config
# says. The limits in force (`Limits`, defaults below, set per deployment) are checked by the ingress
# within them, and answer 422 naming the field like a model constraint would.
CEILING_TASK_CHARS = 100_000
CEILING_RUBRIC_CHARS = 50_000
CEILING_AGENTS = 64
CEILING_ROUNDS = 10
CEILING_DRAFTS = 8  # drafts_per_agent
CEILING_MAX_TOKENS = 32_768
CEILING_BODY_BYTES = 16 * 1024 * 1024
CEILING_TESTS_CHARS = 20_000  # constraints.tests / sql_schema
METADATA_MAX_CHARS = 16_000  # constraints.metadata, as JSON
METADATA_MAX_DEPTH = 8


class Limits(Strict):
    """Input limits in force, checked by the ingress (serve_app/validation.py for requests, serve_app/limits.py for
    429s and body sizes) within the hard ceilings above."""

    max_task_chars: int = Field(8000, ge=1, le=CEILING_TASK_CHARS)
    max_rubric_chars: int = Field(4000, ge=0, le=CEILING_RUBRIC_CHARS)
    max_agents: int = Field(16, ge=1, le=CEILING_AGENTS)
    max_rounds: int = Field(5, ge=0, le=CEILING_ROUNDS)
    max_tokens: int = Field(2048, ge=1, le=CEILING_MAX_TOKENS)
    max_body_bytes: int = Field(256 * 1024, ge=1024, le=CEILING_BODY_BYTES)
    # Roles must also match ROLE_PATTERN (they become actor names and Valkey keys): this can only narrow it.
    role_pattern: str = Field(ROLE_PATTERN, min_length=1, max_length=200)
    # Pending + running deliberations of one council; beyond it new ones get 429 with Retry-After.
    max_active_per_council: int = Field(32, ge=1, le=100_000)
    # Pending + running deliberations of all councils together (429 with Retry-After beyond it).
    max_active_total: int = Field(256, ge=1, le=1_000_000)
    # Councils in the registry (each one is a Ray actor, a worker process): creating one more is a 422.
    max_councils: int = Field(64, ge=1, le=10_000)
    # Agents over all councils together (PUT / POST .../agents beyond it: 422).
    max_agents_total: int = Field(512, ge=1, le=1_000_000)
    # Open event streams (SSE, chat streams) per ingress replica; one more is a 429 with Retry-After.
    max_sse_connections: int = Field(256, ge=1, le=100_000)

    @field_validator("role_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        import re

        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"role_pattern is not a regular expression: {exc}") from None
        return pattern


LIMITS = Limits()  # the defaults


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

    @field_validator("peer_rank", mode="before")
    @classmethod
    def _peer_rank_bool(cls, value: Any) -> Any:
        return {True: "when_undecided", False: "never"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("verifiers")
    @classmethod
    def _known_verifiers(cls, names: list[str] | None) -> list[str] | None:
        if names is not None:
            from .verifiers import validate_names  # the verifiers import this module

            validate_names(names)
        return names
    min_chars: int = Field(20, ge=0)
    max_chars: int = Field(20000, ge=1)

    @field_validator("weights")
    @classmethod
    def _finite_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        import math

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


class Constraints(Strict):
    rubric: str = Field("", max_length=CEILING_RUBRIC_CHARS)
    requirements: list[str] = Field(default_factory=list, max_length=32)
    # What the verifiers check the artifact against (actors/verifiers): Python tests (assert lines,
    # >>> doctest lines or pytest-style test_* functions), a JSON Schema, an SQL schema to execute on.
    tests: str | None = Field(None, max_length=CEILING_TESTS_CHARS)
    json_schema: dict[str, Any] | None = None
    sql_schema: str | None = Field(None, max_length=CEILING_TESTS_CHARS)
    # Exact-answer tasks: "integer", "number", "choice:A|B|C" or a regex with one group; the final
    # answer is extracted from every proposal and equal answers vote together.
    answer_format: str | None = Field(None, min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(300, gt=0, le=3600)

    @field_validator("metadata")
    @classmethod
    def _storable_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        import json

        # Stored and served as JSON: it must encode as UTF-8 JSON (no NaN, no lone surrogates), small and shallow.
        try:
            text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
            text.encode("utf-8")
        except (ValueError, TypeError, UnicodeEncodeError, RecursionError) as exc:
            raise ValueError(f"metadata must be plain JSON: {type(exc).__name__}") from None
        if len(text) > METADATA_MAX_CHARS:
            raise ValueError(f"metadata is over {METADATA_MAX_CHARS} characters as JSON")
        stack = [(metadata, 1)]
        while stack:
            value, depth = stack.pop()
            if depth > METADATA_MAX_DEPTH:
                raise ValueError(f"metadata is nested deeper than {METADATA_MAX_DEPTH} levels")
            children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
            stack += [(v, depth + 1) for v in children if isinstance(v, (dict, list))]
        return metadata

    @field_validator("answer_format")
    @classmethod
    def _known_format(cls, fmt: str | None) -> str | None:
        if fmt is not None:
            from .answers import validate_format

            validate_format(fmt)
        return fmt

    @field_validator("requirements")
    @classmethod
    def _short_requirements(cls, reqs: list[str]) -> list[str]:
        for r in reqs:
            if not r.strip() or len(r) > 500:
                raise ValueError("each requirement must be 1..500 non-blank characters")
        return reqs


class DeliberationRequest(Strict):
    role: str = Field(pattern=ROLE_PATTERN)
    task: str = Field(min_length=1, max_length=CEILING_TASK_CHARS)
    constraints: Constraints = Field(default_factory=Constraints)
    rounds: int | None = Field(None, ge=0, le=CEILING_ROUNDS)
    num_agents: int | None = Field(None, ge=1, le=CEILING_AGENTS)
    max_tokens: int | None = Field(None, ge=1, le=CEILING_MAX_TOKENS)

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


DecidedBy = Literal["verifiers", "votes", "peer_rank", "tie_break", "only_candidate"]


class DeliberationResult(Strict):
    proposals: list[Proposal]  # ranked, rank 1 first; each stands for its chosen version
    winner_id: str  # author of the winning proposal
    winner_version: int = 0
    written_by: str | None = None  # who wrote the winning text: the author, or the critic who revised it
    decided_by: DecidedBy | None = None
    reason: str | None = None
    candidates: list[CandidateVerdict] = Field(default_factory=list)  # every version, ranked
    rankings: list[PeerRanking] = Field(default_factory=list)
    duration_s: float
    usage: Usage


class StageTiming(Strict):
    """Where one stage's time and tokens went (wall seconds; generation and verification overlap nothing)."""

    stage: str
    seconds: float = 0.0  # the whole stage, from start to its checkpoint written
    generation_s: float = 0.0
    verification_s: float = 0.0
    checkpoint_s: float = 0.0
    calls: int = 0
    prompt_tokens: int = 0
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
    # Critiques of the round in progress, kept between its critique and revise stages.
    pending_critiques: list[str] = Field(default_factory=list)
    # Peer rankings, once the rank stage ran; stages skipped by early stop (every proposal verified).
    rankings: list[PeerRanking] = Field(default_factory=list)
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


class DefaultCouncils(Strict):
    """Councils the ingress creates when the registry is empty."""

    roles: list[str] = Field(default_factory=lambda: list(DEFAULT_ROLES))
    agents_per_council: int = Field(3, ge=1, le=CEILING_AGENTS)
    engine: str = Field(pattern=ENGINE_NAME_PATTERN)
    rounds: int = Field(1, ge=0, le=CEILING_ROUNDS)
    # The shape benchmarks/quality.py measures against one agent and self-consistency (docs/quality.md).
    drafts_per_agent: int = Field(4, ge=1, le=CEILING_DRAFTS)
    max_tokens: int = Field(256, ge=1, le=CEILING_MAX_TOKENS)

    @field_validator("roles")
    @classmethod
    def _valid_roles(cls, roles: list[str]) -> list[str]:
        import re

        bad = [r for r in roles if not re.match(ROLE_PATTERN, r)]
        if bad:
            raise ValueError(f"invalid role names {bad}; roles match {ROLE_PATTERN}")
        return roles


class CouncilConfig(CouncilUpsert):
    """A council declared in the config (`councils:`): upserted on every deploy, owned by the config."""

    role: str = Field(pattern=ROLE_PATTERN)


class VerificationConfig(Strict):
    """Ray options of the verification tasks (`verification:` in the app config; actors/verification.py)."""

    num_cpus: float = Field(0.5, ge=0, description="CPU each verification task reserves")
    resources: dict[str, float] = Field(
        default_factory=lambda: topology.demand(topology.VERIFIER),
        description="Ray resources of each task; default the verifier resource of worker nodes (docs/topology.md)")
    max_retries: int = Field(1, ge=0, le=5)


class AppConfig(Strict):
    """Arguments of the Serve application (`args:` in configs/*.yaml), checked by the typed builder."""

    valkey_url: str | None = Field(None, description="default: $COUNCILS_VALKEY_URL")
    key_prefix: str = "councils:"
    engines: list[EngineSpec] = Field(min_length=1)
    default_councils: DefaultCouncils
    # Declarative councils: created or updated (version bump only on a real change) at every deploy.
    # When any are declared they replace default_councils as the bootstrap of an empty registry.
    councils: list[CouncilConfig] = Field(default_factory=list)
    # Delete councils absent from the config (API-created ones included). Off by default.
    prune_councils: bool = False
    record_ttl_s: int = Field(3600, ge=1, description="default retention; user_config.record_ttl_s overrides it")
    council_max_concurrency: int = Field(64, ge=1)
    verification: VerificationConfig = Field(default_factory=VerificationConfig)
    # Input limits in force (docs/api.md), within the request models' hard ceilings.
    limits: Limits = Field(default_factory=Limits)
    # docs/security.md. A replica bound to a non-loopback address refuses to start without an API token
    # unless this is true: an API open to the network only on purpose.
    allow_unauthenticated: bool = False
    # /openapi.json and /docs answer without a token only when true (with a token set they need it otherwise).
    public_docs: bool = False

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> "AppConfig":
        import re

        d, lim = self.default_councils, self.limits
        over = [f"{name} {value} > limits.{lim_name} {getattr(lim, lim_name)}"
                for name, value, lim_name in (("agents_per_council", d.agents_per_council, "max_agents"),
                                              ("rounds", d.rounds, "max_rounds"), ("max_tokens", d.max_tokens, "max_tokens"))
                if value > getattr(lim, lim_name)]
        over += [f"role {r!r} does not match limits.role_pattern" for r in d.roles if not re.fullmatch(lim.role_pattern, r)]
        if over:
            raise ValueError(f"default_councils outside the limits: {'; '.join(over)}")
        return self

    @model_validator(mode="after")
    def _engine_known(self) -> "AppConfig":
        names = {e.name for e in self.engines}
        if len(names) != len(self.engines):
            raise ValueError("engine names must be unique")
        if self.default_councils.engine not in names:
            raise ValueError(
                f"default_councils.engine {self.default_councils.engine!r} is not among engines {sorted(names)}"
            )
        roles = [c.role for c in self.councils]
        if len(roles) != len(set(roles)):
            raise ValueError(f"councils: roles must be unique, got {roles}")
        for c in self.councils:
            unknown = sorted({a.engine for a in c.agents} - names)
            if unknown:
                raise ValueError(f"councils[{c.role}]: unknown engine(s) {unknown}; engines are {sorted(names)}")
        return self


class RuntimeSettings(Strict):
    """`user_config` of the Ingress deployment: what may change live. `serve deploy` with only these
    changed calls `Ingress.reconfigure` on the running replicas instead of replacing them."""

    # Retention of finished records and their events (default: AppConfig.record_ttl_s).
    record_ttl_s: int | None = Field(None, ge=1)
    # Deadline of a deliberation whose request does not set constraints.timeout_s.
    default_timeout_s: float = Field(300, gt=0, le=3600)
    # Requests asking for a longer constraints.timeout_s are refused (422).
    max_timeout_s: float = Field(3600, gt=0, le=3600)
    # How long `wait=true` keeps waiting past a deliberation's deadline for the council to end it.
    wait_grace_s: float = Field(30, ge=0, le=600)
    # Input limits in force, replacing the args' `limits` live (within the request models' hard ceilings).
    limits: Limits | None = None

    @model_validator(mode="after")
    def _default_within_max(self) -> "RuntimeSettings":
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError(f"default_timeout_s {self.default_timeout_s:g} exceeds max_timeout_s {self.max_timeout_s:g}")
        return self


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
