"""The input limits in force on this ingress replica, and the checks that enforce them.

The request models (actors/specs.py) carry hard ceilings; the limits set for the deployment
(`AppConfig.limits`) are checked here, within them. A request over a limit answers 422 with the
same shape as a model constraint (`body.task: String should have at most 8000 characters`), a body
over `max_body_bytes` 413 (with or without Content-Length), and a council with `max_active_per_council`
pending or running deliberations 429 with Retry-After.

The limits live in this module because the ASGI middleware, which runs before any route, needs them:
one replica is one process, so a module value is per replica. `configure` is called by the Ingress.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable

from starlette.responses import JSONResponse

from actors.specs import ROLE_PATTERN, AgentSpec, DeliberationRequest, Limits

from .errors import ApiError, error_body, validation_message

_current = Limits()


def configure(limits: Limits | dict) -> Limits:
    global _current
    _current = Limits.model_validate(limits)
    return _current


def current() -> Limits:
    return _current


# -- field checks, in pydantic's error shape ----------------------------------------------------------
def _error(loc: tuple, msg: str, kind: str, value: Any, **ctx: Any) -> dict[str, Any]:
    return {"type": kind, "loc": list(loc), "msg": msg, "input": value, "ctx": ctx}


def _max_chars(loc: tuple, value: str | None, limit: int) -> list[dict]:
    if value is not None and len(value) > limit:
        return [_error(loc, f"String should have at most {limit} characters", "string_too_long",
                       f"<{len(value)} characters>", max_length=limit)]
    return []


def _max_value(loc: tuple, value: int | None, limit: int) -> list[dict]:
    if value is not None and value > limit:
        return [_error(loc, f"Input should be less than or equal to {limit}", "less_than_equal", value, le=limit)]
    return []


def _max_items(loc: tuple, items: list, limit: int) -> list[dict]:
    if len(items) > limit:
        return [_error(loc, f"List should have at most {limit} items, not {len(items)}", "too_long",
                       f"<{len(items)} items>", max_length=limit)]
    return []


def role_ok(role: str, limits: Limits | None = None) -> bool:
    limits = limits or _current
    # fullmatch: `$` in re.match also matches before a trailing newline.
    return bool(re.fullmatch(ROLE_PATTERN, role) and re.fullmatch(limits.role_pattern, role))


def request_errors(req: DeliberationRequest, limits: Limits | None = None, loc: tuple = ("body",)) -> list[dict]:
    """What of a deliberation request is over the limits in force."""
    lim = limits or _current
    errors = _max_chars((*loc, "task"), req.task, lim.max_task_chars)
    errors += _max_chars((*loc, "constraints", "rubric"), req.constraints.rubric, lim.max_rubric_chars)
    errors += _max_value((*loc, "rounds"), req.rounds, lim.max_rounds)
    errors += _max_value((*loc, "num_agents"), req.num_agents, lim.max_agents)
    errors += _max_value((*loc, "max_tokens"), req.max_tokens, lim.max_tokens)
    if not role_ok(req.role, lim):
        errors.append(_error((*loc, "role"), f"String should match pattern '{lim.role_pattern}'",
                             "string_pattern_mismatch", req.role, pattern=lim.role_pattern))
    return errors


def agents_errors(agents: Iterable[AgentSpec], limits: Limits | None = None, loc: tuple = ("body", "agents")) -> list[dict]:
    lim = limits or _current
    errors: list[dict] = []
    for i, agent in enumerate(agents):
        errors += _max_value((*loc, i, "max_tokens"), agent.max_tokens, lim.max_tokens)
    return errors


def council_errors(agents: list[AgentSpec], rounds: int, limits: Limits | None = None,
                   loc: tuple = ("body",)) -> list[dict]:
    """PUT /v1/councils/{role}: agents per council, rounds, each agent's max_tokens."""
    lim = limits or _current
    return (_max_items((*loc, "agents"), agents, lim.max_agents) + _max_value((*loc, "rounds"), rounds, lim.max_rounds)
            + agents_errors(agents, lim, (*loc, "agents")))


def raise_for(errors: list[dict]) -> None:
    if errors:
        raise ApiError(422, validation_message(errors), errors)


def check_role(role: str) -> str:
    """Before a role reaches an actor name or a Valkey key."""
    if not role_ok(role):
        pattern = ROLE_PATTERN if _current.role_pattern == ROLE_PATTERN else f"{ROLE_PATTERN} and {_current.role_pattern}"
        raise ApiError(422, f"role {role!r} is invalid: roles match {pattern}")
    return role


# -- concurrent deliberations per council -------------------------------------------------------------
async def busy_error(store, role: str, active: int, limits: Limits | None = None) -> ApiError:
    """The 429, with Retry-After, for a council that has max_active_per_council pending or running
    deliberations (`Store.create_record(..., max_active=...)` checks and writes in one atomic step)."""
    lim = limits or _current
    return ApiError(429, f"council {role} is busy: {active} deliberations pending or running "
                         f"(limit {lim.max_active_per_council}); retry later",
                    headers={"Retry-After": str(await retry_after_s(store, role))})


def service_busy_error(active: int, limits: Limits | None = None) -> ApiError:
    """The 429 for all councils together at max_active_total (checked in the same atomic step)."""
    lim = limits or _current
    return ApiError(429, f"the service is busy: {active} deliberations pending or running in all councils "
                         f"(limit {lim.max_active_total}); retry later", headers={"Retry-After": "10"})


def registry_full_error(exc) -> ApiError:
    """A council write over max_councils or max_agents_total (store.RegistryFull): 422, nothing written."""
    what = {"max_councils": "councils", "max_agents_total": "agents in all councils"}[exc.limit]
    return ApiError(422, f"limits.{exc.limit}: this write would make {exc.value} {what}, over the limit of "
                         f"{exc.cap}; delete some first or raise the limit in the config")


async def retry_after_s(store, role: str) -> int:
    """About one median deliberation of the council (1..60 s; 5 s when it has no history)."""
    samples = sorted(await store.durations(role))
    if not samples:
        return 5
    return max(1, min(60, math.ceil(samples[len(samples) // 2])))


# -- request body size: an ASGI middleware ------------------------------------------------------------
class BodyLimitMiddleware:
    """413 for a body over the limit, whether it announces a Content-Length or comes chunked.

    The body is read (at most limit + one chunk) before the app sees it, then replayed: no route ever
    reads an unbounded body, and a body that lies about its length cannot get past.
    """

    def __init__(self, app, max_bytes: Callable[[], int] = lambda: _current.max_body_bytes):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes()
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not (length.isdigit() and len(length) <= 18):
                return await _reply(scope, receive, send, 400, "invalid Content-Length")
            if int(length) > limit:
                return await _reply(scope, receive, send, 413, f"request body over {limit} bytes")
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return await _reply(scope, receive, send, 413, f"request body over {limit} bytes")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(scope, receive, send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    await JSONResponse(error_body(status, message), status_code=status, headers=headers)(scope, receive, send)
