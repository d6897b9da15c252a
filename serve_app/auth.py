"""Bearer-token authentication of the HTTP API, with two scopes.

- `COUNCILS_API_TOKEN` / `COUNCILS_API_TOKEN_FILE`: the read/deliberate token (every GET, deliberations,
  orchestration, chat). Without an admin token it also has the admin scope (one token, as before).
- `COUNCILS_ADMIN_TOKEN` / `COUNCILS_ADMIN_TOKEN_FILE`: the admin token, which may do everything, including
  council writes and deletes (PUT/POST/DELETE under /v1/councils). The read token gets 403 there.

With any token set, every route but the open ones (health, readiness, the council viewer's static files under
/ui, which hold no data, and the OpenAPI document when the config says `public_docs: true`) needs `Authorization: Bearer <token>`, compared in constant time. Without
any token the API is open (the ingress refuses that on a non-loopback address unless the config says
`allow_unauthenticated: true`; see app.py and docs/security.md). A token file that is set but cannot be
read, or is empty, stops the replica from starting: a misconfigured secret never silently leaves the API open.

The tokens never appear in a log line, an error message or a response.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Mapping

from starlette.responses import JSONResponse

from . import redact, ui
from .errors import error_body
from .settings import EnvSettings, env_var

ENV_TOKEN = env_var("api_token")  # COUNCILS_API_TOKEN (serve_app/settings.py reads them all)
ENV_TOKEN_FILE = env_var("api_token_file")
ENV_ADMIN_TOKEN = env_var("admin_token")
ENV_ADMIN_TOKEN_FILE = env_var("admin_token_file")
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
DOCS_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
UI_PATHS = ui.PATHS  # the council viewer's static files (GET only): they hold no data; the page asks for the token
OPEN_PATHS = HEALTH_PATHS | DOCS_PATHS | UI_PATHS  # what may ever be open (the OpenAPI document marks them so)
REALM = "councils"
ADMIN, READ, OPEN = "admin", "read", "open"  # a caller's scope; OPEN: no token is configured at all
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuthConfigError(RuntimeError):
    """The token configuration is unusable. Its message names the variable or file, never the token."""


def _load(env: EnvSettings, field: str) -> str | None:
    var, file_var = env_var(field), env_var(field + "_file")
    value = getattr(env, field)
    path = getattr(env, field + "_file")
    if value and path:
        raise AuthConfigError(f"set {var} or {file_var}, not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthConfigError(f"{file_var}={path} cannot be read: {type(exc).__name__}") from None
        value = value.strip()
        if not value:
            raise AuthConfigError(f"{file_var}={path} is empty")
    value = value.strip()
    if not value:
        return None
    # It travels in a header: visible ASCII, no spaces.
    if not all(33 <= ord(c) <= 126 for c in value):
        raise AuthConfigError(f"the API token ({file_var if path else var}) must be printable ASCII without spaces")
    return value


def load_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The read/deliberate token (COUNCILS_API_TOKEN or COUNCILS_API_TOKEN_FILE), or None."""
    return _load(EnvSettings.from_env(environ), "api_token")


def load_tokens(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{scope: token} of this replica: {} (open), or read and/or admin. One token alone has every scope."""
    env = EnvSettings.from_env(environ)
    read = _load(env, "api_token")
    admin = _load(env, "admin_token")
    if read and admin and hmac.compare_digest(read, admin):
        raise AuthConfigError(f"{ENV_TOKEN} and {ENV_ADMIN_TOKEN} must differ")
    if admin:
        return {ADMIN: admin, **({READ: read} if read else {})}
    return {ADMIN: read} if read else {}


class TokenAuth:
    """The tokens of one ingress replica and whether the OpenAPI document is open: loaded once, when the
    replica builds its app (serve_app/app.py), and read by its BearerAuthMiddleware."""

    def __init__(self, tokens: Mapping[str, str] | None = None, public_docs: bool = False):
        self.tokens: dict[str, str] = dict(tokens or {})
        self.public_docs = public_docs

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, public_docs: bool = False) -> "TokenAuth":
        """Load the tokens (load_tokens) and register them for redaction; an unusable configuration raises."""
        tokens = load_tokens(environ)
        for token in tokens.values():
            redact.register(token)
        return cls(tokens, public_docs)

    @property
    def on(self) -> bool:
        """Whether authentication is on (any token configured)."""
        return bool(self.tokens)


def presented(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def authorized(header: str | None, token: str) -> bool:
    value = presented(header)
    if value is None:
        return False
    return hmac.compare_digest(value.encode("utf-8", "replace"), token.encode("utf-8"))


def scope_of(header: str | None, configured: Mapping[str, str]) -> str | None:
    """The scope a request's Authorization header grants: OPEN without tokens, else ADMIN, READ or None."""
    if not configured:
        return OPEN
    granted = None
    for scope in (ADMIN, READ):  # both compared, in constant time each
        if scope in configured and authorized(header, configured[scope]):
            granted = granted or scope
    return granted


def needs_admin(method: str, path: str) -> bool:
    """Council (and engine) writes and deletes: PUT/POST/DELETE/PATCH under /v1/councils or /v1/engines."""
    return method.upper() not in SAFE_METHODS and (path.startswith("/v1/councils") or path.startswith("/v1/engines"))


def caller_scope(request) -> str | None:
    """The scope the auth middleware granted this request (None: anonymous on an open path)."""
    return (request.scope.get("state") or {}).get("councils_scope")


class BearerAuthMiddleware:
    """An ASGI middleware: answers 401 (JSON, `WWW-Authenticate: Bearer`) or 403 (a read token on an admin
    route) before any route or body read. Open paths pass, with the caller's scope noted for the route."""

    def __init__(self, app, auth: TokenAuth | None = None, open_paths=None):
        self.app = app
        self.auth = auth if auth is not None else TokenAuth.from_env()
        self.open_paths = open_paths

    def _open(self, path: str, method: str = "GET") -> bool:
        if self.open_paths is not None:
            return path in self.open_paths
        return (path in HEALTH_PATHS or (self.auth.public_docs and path in DOCS_PATHS)
                or (path in UI_PATHS and method.upper() == "GET"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = _route_path(scope)
        header = None
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        granted = scope_of(header, self.auth.tokens)
        scope.setdefault("state", {})["councils_scope"] = granted
        if self._open(path, scope.get("method", "GET")):
            return await self.app(scope, receive, send)
        if granted is None:
            if header:
                message, challenge = "invalid bearer token", f'Bearer realm="{REALM}", error="invalid_token"'
            else:
                message, challenge = ("authentication required: send Authorization: Bearer <token>",
                                      f'Bearer realm="{REALM}"')
            return await _reply(scope, receive, send, 401, message, {"WWW-Authenticate": challenge})
        if granted == READ and needs_admin(scope.get("method", "GET"), path):
            return await _reply(scope, receive, send, 403,
                                "this token may read and deliberate; council writes and deletes need the admin token",
                                {"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'})
        await self.app(scope, receive, send)


def _route_path(scope) -> str:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


async def _reply(scope, receive, send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    await JSONResponse(error_body(status, message), status_code=status, headers=headers)(scope, receive, send)
