"""JSON errors with a message a person can act on."""

from __future__ import annotations

import math
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers


def error_body(status: int, message: str, detail: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"status": status, "message": _text(message)}}
    if detail is not None:
        body["error"]["detail"] = _jsonable(detail)
    return body


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
