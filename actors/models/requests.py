"""What a client asks for: a deliberation request and its constraints (the body of POST /v1/deliberations)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from .base import ROLE_PATTERN, Strict
from .limits import (CEILING_AGENTS, CEILING_CONTEXT_CHARS, CEILING_MAX_TOKENS, CEILING_ROUNDS, CEILING_RUBRIC_CHARS, CEILING_TASK_CHARS,
                     CEILING_TESTS_CHARS, METADATA_MAX_CHARS, METADATA_MAX_DEPTH)


class Constraints(Strict):
    # Material the task refers to (a source file to review, a log, a schema). It goes into the brief every
    # prompt of the deliberation starts with, so the engine's prefix cache holds it once for every agent and stage.
    context: str = Field("", max_length=CEILING_CONTEXT_CHARS)
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
            from ..answers import validate_format

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
