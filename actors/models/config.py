"""The deployment's configuration: the Serve application's arguments (`args:` of configs/*.yaml, checked by the
typed builder) and the live settings (`user_config`, applied without a restart)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .. import topology
from .base import DEFAULT_ROLES, ENGINE_NAME_PATTERN, ROLE_PATTERN, Strict
from .councils import CouncilUpsert, EngineSpec
from .limits import CEILING_AGENTS, CEILING_DRAFTS, CEILING_MAX_TOKENS, CEILING_ROUNDS, Limits


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
    # Fail closed (docs/security.md): where the sandbox cannot isolate, verifiers that execute code do not start.
    allow_unisolated_sandbox: bool = Field(
        False, description="run proposal code with rlimits only where bubblewrap isolation is unavailable")


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
    # The longest a waiter (?wait=true, a non-streamed chat completion) waits; then it answers 202 with the
    # status URL and the deliberation runs on (limits.max_waiters caps how many wait at once).
    max_wait_s: float = Field(300, gt=0, le=3600)
    # Input limits in force, replacing the args' `limits` live (within the request models' hard ceilings).
    limits: Limits | None = None

    @model_validator(mode="after")
    def _default_within_max(self) -> "RuntimeSettings":
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError(f"default_timeout_s {self.default_timeout_s:g} exceeds max_timeout_s {self.max_timeout_s:g}")
        return self
