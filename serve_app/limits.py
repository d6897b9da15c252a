"""The 413 of a body over `max_body_bytes`: an ASGI middleware, before any route reads it.

The caps' answers (429s with Retry-After, the 422 of a full registry) are in serve_app/actor_errors.py, beside every
other typed exception of the store and the actors.

Field limits (task length, rounds, agents, ...) are checked with everything else a request is resolved against,
in serve_app/validation.py. The limits in force are the service's (serve_app/service.py: the config's `limits`,
or the live settings'); every function here takes them as an argument.
"""

from __future__ import annotations

from typing import Callable

from starlette.responses import JSONResponse

from actors.models.limits import Limits

from .errors import error_body


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
