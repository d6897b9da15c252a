"""JSON errors with a message a person can act on: the exception routes raise, the body every error has
(`{"error": {"status": 422, "message": "body.task: ...", "detail": [...]}}`), and its pydantic model, which the
routes name in `responses=` so the OpenAPI document says what the API really answers."""

from __future__ import annotations

import logging
import math
import secrets
from typing import Any

from pydantic import BaseModel, Field


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None,
                 error_id: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers
        self.error_id = error_id  # set for internal errors (internal_error): the log line's id


def error_body(status: int, message: str, detail: Any = None, error_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"status": status, "message": _text(message)}}
    if detail is not None:
        body["error"]["detail"] = _jsonable(detail)
    if error_id is not None:
        body["error"]["error_id"] = error_id
    return body


def new_error_id() -> str:
    """A random id that ties what a caller was told to the log line with the detail."""
    return secrets.token_hex(8)


def internal_error(log: logging.Logger, what: str, status: int = 503,
                   headers: dict[str, str] | None = None) -> ApiError:
    """An unexpected error, for a caller: a generic message and an error id. The detail (the exception, its
    traceback: remote tracebacks name hosts, paths and IPs) goes to the log only, under the same id. Call it
    inside the `except` block, so the log line carries the traceback."""
    error_id = new_error_id()
    log.exception("%s (error id %s)", what, error_id)
    return ApiError(status, f"internal error (error id {error_id}); the service's log has the detail",
                    headers=headers, error_id=error_id)


def validation_message(errors: list[dict[str, Any]]) -> str:
    """'body.task: String should have at least 1 character; ...' naming each bad field."""
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "__root__") or "request"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _jsonable(value: Any) -> Any:
    # Validation errors may carry exceptions or bytes in ctx/input: keep only what JSON can say.
    if isinstance(value, dict):
        return {_text(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / Infinity
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return _text(str(value))


def _text(value: str) -> str:
    """A string that encodes as UTF-8: lone surrogates (valid in a JSON escape, not in UTF-8) become U+FFFD."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)


# -- the error body as a model, for the OpenAPI document ------------------------------------------------
class ErrorInfo(BaseModel):
    status: int
    message: str
    detail: Any = None
    # The OpenAI-compatible routes add these (OpenAI's error shape is a superset of ours).
    type: str | None = None
    code: str | None = None
    param: str | None = None
    # Internal errors only: their message is generic, and this id names the log line with the detail.
    error_id: str | None = None


class ErrorResponse(BaseModel):
    """Every error the API answers, whatever its status."""

    error: ErrorInfo = Field(description="status, a message naming the field or the cause, and details")


DESCRIPTIONS = {
    400: "Malformed request (e.g. an invalid Content-Length)",
    401: "Missing or wrong bearer token (only when the deployment sets one)",
    403: "The token may read and deliberate, but this write needs the admin token",
    404: "Unknown council, agent, deliberation or model",
    409: "Conflict with the current state (e.g. a council owned by the deployed config)",
    413: "Request body over the limit",
    422: "Invalid input: the message names the field",
    429: "Over a concurrency limit: the council's or the service's pending and running deliberations, or open event streams",
    503: "Valkey, an engine or the council is unavailable, or the deliberation failed",
    504: "The deliberation timed out",
}
_SECONDS = {"schema": {"type": "string"}, "description": "seconds"}
HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="councils"'}},
    429: {"Retry-After": _SECONDS},
    503: {"Retry-After": {**_SECONDS, "description": "seconds (Valkey unavailable or full)"}},
}
AUTHENTICATED = (400, 401, 413, 503)  # any route behind the token and the body limit


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: each status with the ErrorResponse model, its description and headers."""
    return {code: {"model": ErrorResponse, "description": DESCRIPTIONS[code],
                   **({"headers": HEADERS[code]} if code in HEADERS else {})} for code in sorted(set(codes))}
