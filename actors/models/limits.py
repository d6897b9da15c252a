"""Input limits: the hard ceilings every request model carries, and the limits in force within them."""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import ROLE_PATTERN, Strict

# Hard ceilings: the most the request models (and so the stored records) accept, whatever the config
# says. The limits in force (`Limits`, defaults below, set per deployment) are checked by the ingress
# within them, and answer 422 naming the field like a model constraint would.
CEILING_TASK_CHARS = 100_000
CEILING_RUBRIC_CHARS = 50_000
CEILING_CONTEXT_CHARS = 50_000  # constraints.context
CEILING_AGENTS = 64
CEILING_ROUNDS = 10
CEILING_DRAFTS = 8  # drafts_per_agent
CEILING_ENGINE_REPLICAS = 16  # EngineSpec.replicas
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
    # Requests waiting for a deliberation to end (?wait=true, non-streamed chat completions, orchestrate) per
    # ingress replica: one more gets its 202 (status URL) at once, or 429 for orchestrate. Keep it below the
    # deployment's max_ongoing_requests, so waiters never take every slot of a replica.
    max_waiters: int = Field(128, ge=1, le=100_000)

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
