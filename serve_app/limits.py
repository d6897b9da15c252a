"""What happens over a limit that is not a field's: the 429s of the concurrency caps (with Retry-After), the 422 of
a full registry, and the 413 of a body over `max_body_bytes` (an ASGI middleware, before any route reads it).

Field limits (task length, rounds, agents, ...) are checked with everything else a request is resolved against,
in serve_app/validation.py. The limits in force are the service's (serve_app/service.py: the config's `limits`,
or the live settings'); every function here takes them as an argument.
"""

from __future__ import annotations

import math
from typing import Callable

from starlette.responses import JSONResponse

from actors.models.limits import Limits

from .errors import ApiError, error_body


# -- concurrent deliberations per council -------------------------------------------------------------
async def busy_error(store, role: str, active: int, limits: Limits) -> ApiError:
    """The 429, with Retry-After, for a council that has max_active_per_council pending or running
    deliberations (`Store.create_record(..., max_active=...)` checks and writes in one atomic step)."""
    return ApiError(429, f"council {role} is busy: {active} deliberations pending or running "
                         f"(limit {limits.max_active_per_council}); retry later",
                    headers={"Retry-After": str(await retry_after_s(store, role))})


def service_busy_error(active: int, limits: Limits) -> ApiError:
    """The 429 for all councils together at max_active_total (checked in the same atomic step)."""
    return ApiError(429, f"the service is busy: {active} deliberations pending or running in all councils "
                         f"(limit {limits.max_active_total}); retry later", headers={"Retry-After": "10"})


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

    def __init__(self, app, max_bytes: Callable[[], int] = lambda: Limits().max_body_bytes):
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
