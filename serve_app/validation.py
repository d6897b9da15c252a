"""The one validation step: a request resolved against its council, the limits in force and the live settings.

The request models (actors/models/) carry the hard ceilings (pydantic, before a route runs); everything that
depends on the deployment is checked here, in one place and in one error shape — pydantic's, so a limit reads
like a model constraint: `{"loc": ["body", "task"], "msg": "String should have at most 8000 characters", ...}`,
answered as 422 `body.task: String should have at most 8000 characters` (ApiError with the list as detail).

- `resolve_request`: a deliberation request -> the request as it will run (limits, the council's size, the live
  maximum timeout, tests no verifier of the council can run; then the defaults filled in: timeout, rounds,
  num_agents), or one 422 naming every bad field.
- `resolve_council` / `resolve_new_agent`: council writes (PUT, POST .../agents) against the limits.
- `check_role`: a role from a path, before it reaches an actor name or a Valkey key.

The protocol's own clamps (actors/protocol.py) stay: they protect the council whatever calls it.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from actors import verifiers
from actors.models.base import ROLE_PATTERN
from actors.models.config import RuntimeSettings
from actors.models.councils import AgentSpec, CouncilSpec, CouncilUpsert
from actors.models.limits import Limits
from actors.models.requests import DeliberationRequest

from .errors import ApiError, validation_message

Locate = Callable[[list[dict]], list[dict]]  # renames error locations (the chat route names its own fields)


# -- field errors, in pydantic's shape ----------------------------------------------------------------
def field_error(loc: tuple, msg: str, kind: str, value: Any, **ctx: Any) -> dict[str, Any]:
    return {"type": kind, "loc": list(loc), "msg": msg, "input": value, "ctx": ctx}


def _max_chars(loc: tuple, value: str | None, limit: int) -> list[dict]:
    if value is not None and len(value) > limit:
        return [field_error(loc, f"String should have at most {limit} characters", "string_too_long",
                            f"<{len(value)} characters>", max_length=limit)]
    return []


def _max_value(loc: tuple, value: int | None, limit: int) -> list[dict]:
    if value is not None and value > limit:
        return [field_error(loc, f"Input should be less than or equal to {limit}", "less_than_equal", value, le=limit)]
    return []


def _max_items(loc: tuple, items: list, limit: int) -> list[dict]:
    if len(items) > limit:
        return [field_error(loc, f"List should have at most {limit} items, not {len(items)}", "too_long",
                            f"<{len(items)} items>", max_length=limit)]
    return []


def raise_for(errors: list[dict], locate: Locate | None = None) -> None:
    """One 422 for all the errors found (none: nothing happens)."""
    if errors:
        errors = locate(errors) if locate else errors
        raise ApiError(422, validation_message(errors), errors)


# -- roles --------------------------------------------------------------------------------------------
def role_ok(role: str, limits: Limits | None = None) -> bool:
    limits = limits or Limits()
    # fullmatch: `$` in re.match also matches before a trailing newline.
    return bool(re.fullmatch(ROLE_PATTERN, role) and re.fullmatch(limits.role_pattern, role))


def check_role(role: str, limits: Limits | None = None) -> str:
    """Before a role reaches an actor name or a Valkey key: 422 unless it matches the built-in and configured patterns."""
    limits = limits or Limits()
    if not role_ok(role, limits):
        pattern = ROLE_PATTERN if limits.role_pattern == ROLE_PATTERN else f"{ROLE_PATTERN} and {limits.role_pattern}"
        raise ApiError(422, f"role {role!r} is invalid: roles match {pattern}")
    return role


# -- deliberation requests ----------------------------------------------------------------------------
def request_errors(req: DeliberationRequest, limits: Limits | None = None, loc: tuple = ("body",)) -> list[dict]:
    """What of a deliberation request is over the limits in force (no council needed)."""
    lim = limits or Limits()
    errors = _max_chars((*loc, "task"), req.task, lim.max_task_chars)
    errors += _max_chars((*loc, "constraints", "rubric"), req.constraints.rubric, lim.max_rubric_chars)
    errors += _max_value((*loc, "rounds"), req.rounds, lim.max_rounds)
    errors += _max_value((*loc, "num_agents"), req.num_agents, lim.max_agents)
    errors += _max_value((*loc, "max_tokens"), req.max_tokens, lim.max_tokens)
    if not role_ok(req.role, lim):
        errors.append(field_error((*loc, "role"), f"String should match pattern '{lim.role_pattern}'",
                                  "string_pattern_mismatch", req.role, pattern=lim.role_pattern))
    return errors


def _timeout_errors(req: DeliberationRequest, settings: RuntimeSettings, loc: tuple) -> list[dict]:
    constraints = req.constraints
    if "timeout_s" in constraints.model_fields_set and constraints.timeout_s > settings.max_timeout_s:
        return [field_error((*loc, "constraints", "timeout_s"),
                            f"timeout_s={constraints.timeout_s:g} is over the limit of {settings.max_timeout_s:g}s",
                            "less_than_equal", constraints.timeout_s, le=settings.max_timeout_s)]
    return []


def verifier_errors(req: DeliberationRequest, council: CouncilSpec, loc: tuple = ("body",)) -> list[dict]:
    """The request's own checks (constraints.tests, sql_schema, json_schema) that no verifier of the council can run:
    tests are run where they are given, or the request is refused naming the verifier it lacks, never ignored."""
    return [field_error((*loc, "constraints", field), why, kind, f"<{len(str(getattr(req.constraints, field)))} characters>")
            for field, kind, why in verifiers.unrunnable(council.role, council.scoring.verifiers, req.constraints)]


def resolve_request(req: DeliberationRequest, council: CouncilSpec | None, settings: RuntimeSettings,
                    limits: Limits | None = None) -> DeliberationRequest:
    """The request as it will run, or ApiError: 422 naming every field over a limit, the council's size or the
    live maximum timeout; 404 when the council (None) does not exist. The effective shape is fixed here
    (live default timeout, the council's rounds, all its agents), so the record alone says what was asked."""
    errors = request_errors(req, limits) + _timeout_errors(req, settings, ("body",))
    if council is not None:
        errors += verifier_errors(req, council)
    if council is not None and req.num_agents is not None and req.num_agents > len(council.agents):
        errors.append(field_error(("body", "num_agents"),
                                  f"num_agents={req.num_agents} but council {req.role} has {len(council.agents)} agents",
                                  "less_than_equal", req.num_agents, le=len(council.agents)))
    raise_for(errors)
    if council is None:
        raise ApiError(404, f"council {req.role!r} not found")
    constraints = req.constraints
    if "timeout_s" not in constraints.model_fields_set:
        constraints = constraints.model_copy(update={"timeout_s": settings.default_timeout_s})
    return req.model_copy(update={
        "constraints": constraints,
        "rounds": council.rounds if req.rounds is None else req.rounds,
        "num_agents": req.num_agents or len(council.agents),
    })


# -- council writes -----------------------------------------------------------------------------------
def agents_errors(agents: Iterable[AgentSpec], limits: Limits | None = None, loc: tuple = ("body", "agents")) -> list[dict]:
    lim = limits or Limits()
    errors: list[dict] = []
    for i, agent in enumerate(agents):
        errors += _max_value((*loc, i, "max_tokens"), agent.max_tokens, lim.max_tokens)
    return errors


def council_errors(agents: list[AgentSpec], rounds: int, limits: Limits | None = None,
                   loc: tuple = ("body",)) -> list[dict]:
    """PUT /v1/councils/{role}: agents per council, rounds, each agent's max_tokens."""
    lim = limits or Limits()
    return (_max_items((*loc, "agents"), agents, lim.max_agents) + _max_value((*loc, "rounds"), rounds, lim.max_rounds)
            + agents_errors(agents, lim, (*loc, "agents")))


def resolve_council(role: str, body: CouncilUpsert, limits: Limits | None = None,
                    writable: Callable[[str], None] | None = None) -> CouncilSpec:
    """The spec a PUT stores: a GET body round-trips (read-only fields ignored; a `role` must match the path).
    `writable(role)` raises for a council the API may not write (the deployed config's: 409)."""
    check_role(role, limits)
    try:
        spec = body.spec_for(role)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    if writable is not None:
        writable(role)
    raise_for(council_errors(body.agents, body.rounds, limits))
    return spec


def resolve_new_agent(spec: CouncilSpec, agent: AgentSpec, limits: Limits | None = None) -> CouncilSpec:
    """The council with one more agent (POST .../agents): 409 for a taken id, 422 over the limits."""
    lim = limits or Limits()
    if any(a.id == agent.id for a in spec.agents):
        raise ApiError(409, f"agent {agent.id!r} already in council {spec.role}")
    if len(spec.agents) >= lim.max_agents:
        raise ApiError(422, f"council {spec.role} already has the maximum of {lim.max_agents} agents")
    raise_for(agents_errors([agent], lim, loc=("body",)))
    return spec.model_copy(update={"agents": [*spec.agents, agent]})
