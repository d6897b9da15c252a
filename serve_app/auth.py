"""Bearer-token authentication of the HTTP API.

When the replica's environment sets `COUNCILS_API_TOKEN` (the token) or `COUNCILS_API_TOKEN_FILE` (a
file holding it, e.g. a mounted secret), every route but the open ones (health, readiness, the OpenAPI
document) needs `Authorization: Bearer <token>`; the token is compared in constant time. Without
either variable the API is open, as before. A token file that is set but cannot be read, or is empty,
stops the replica from starting: a misconfigured secret never silently leaves the API open.

The token never appears in a log line, an error message or a response.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Callable, Mapping

from starlette.responses import JSONResponse

from . import redact
from .errors import error_body

ENV_TOKEN = "COUNCILS_API_TOKEN"
ENV_TOKEN_FILE = "COUNCILS_API_TOKEN_FILE"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
REALM = "councils"


class AuthConfigError(RuntimeError):
    """The token configuration is unusable. Its message names the variable or file, never the token."""


def load_token(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    value = env.get(ENV_TOKEN, "")
    path = env.get(ENV_TOKEN_FILE, "")
    if value and path:
        raise AuthConfigError(f"set {ENV_TOKEN} or {ENV_TOKEN_FILE}, not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthConfigError(f"{ENV_TOKEN_FILE}={path} cannot be read: {type(exc).__name__}") from None
        value = value.strip()
        if not value:
            raise AuthConfigError(f"{ENV_TOKEN_FILE}={path} is empty")
    value = value.strip()
    if not value:
        return None
    # It travels in a header: visible ASCII, no spaces.
    if not all(33 <= ord(c) <= 126 for c in value):
        raise AuthConfigError(f"the API token ({ENV_TOKEN_FILE if path else ENV_TOKEN}) must be printable ASCII without spaces")
    return value


_UNSET = object()
_token: object = _UNSET


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Load the token of this replica (at start-up). Returns whether authentication is on."""
    global _token
    token = load_token(environ)
    if token is not None:
        redact.register(token)
    _token = token
    return token is not None


def expected_token() -> str | None:
    if _token is _UNSET:
        configure()
    return _token  # type: ignore[return-value]


def authorized(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8", "replace"), token.encode("utf-8"))


class BearerAuthMiddleware:
    """An ASGI middleware: answers 401 (JSON, `WWW-Authenticate: Bearer`) before any route or body read."""

    def __init__(self, app, token: Callable[[], str | None] = expected_token, open_paths=OPEN_PATHS):
        self.app = app
        self.token = token
        self.open_paths = open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _route_path(scope) not in self.open_paths:
            try:
                token = self.token()
            except AuthConfigError as exc:
                return await _reply(scope, receive, send, 503, f"authentication is misconfigured: {exc}")
            if token is not None:
                header = None
                for name, value in scope.get("headers") or []:
                    if name == b"authorization":
                        header = value.decode("latin-1")
                        break
                if not authorized(header, token):
                    if header:
                        message, challenge = "invalid bearer token", f'Bearer realm="{REALM}", error="invalid_token"'
                    else:
                        message, challenge = ("authentication required: send Authorization: Bearer <token>",
                                              f'Bearer realm="{REALM}"')
                    return await _reply(scope, receive, send, 401, message, {"WWW-Authenticate": challenge})
        await self.app(scope, receive, send)


def _route_path(scope) -> str:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


async def _reply(scope, receive, send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    await JSONResponse(error_body(status, message), status_code=status, headers=headers)(scope, receive, send)
