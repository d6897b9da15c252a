"""The OpenAPI document says what the API really answers: the JSON error shape (also for 422, which
FastAPI would describe as its own `HTTPValidationError`), every error status a route can give, the
`Retry-After` / `WWW-Authenticate` headers, and the bearer token (optional: it depends on the deployment)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .auth import OPEN_PATHS, needs_admin

ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["status", "message"],
        "properties": {
            "status": {"type": "integer"},
            "message": {"type": "string"},
            "detail": {},
            # OpenAI-compatible routes add these.
            "type": {"type": "string"}, "code": {"type": ["string", "null"]}, "param": {"type": ["string", "null"]},
        },
    }},
}
REF = {"$ref": "#/components/schemas/Error"}
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
HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer realm=\"councils\""}},
    429: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds (Valkey unavailable or full)"}},
}
STREAMS = {("get", "/v1/deliberations/{delib_id}/events"), ("post", "/v1/chat/completions")}
DELIBERATING = {("post", "/v1/deliberations"), ("post", "/v1/orchestrate"), ("post", "/v1/chat/completions")}
# Success statuses FastAPI cannot see (the routes return a JSONResponse with their own status).
SUCCESSES = {
    ("post", "/v1/deliberations"): {"202": "Accepted (without wait=true): follow status_url or events_url"},
    ("put", "/v1/councils/{role}"): {"201": "Created (200: replaced)"},
}
CONFLICTS = {("post", "/v1/councils/{role}/agents"), ("delete", "/v1/councils/{role}/agents/{agent_id}"),
             ("post", "/v1/orchestrate"), ("put", "/v1/councils/{role}"), ("delete", "/v1/councils/{role}"),
             # an Idempotency-Key already used with a different request
             ("post", "/v1/deliberations"), ("post", "/v1/chat/completions")}


def error_statuses(method: str, path: str) -> set[int]:
    codes = {503}
    if path not in OPEN_PATHS:
        codes |= {401, 400, 413}
    if "{" in path or method in ("post", "put"):
        codes |= {404, 422}
    if (method, path) in DELIBERATING:
        codes |= {429, 504}
    if (method, path) in STREAMS:
        codes.add(429)
    if needs_admin(method, path):
        codes.add(403)
    if (method, path) in CONFLICTS:
        codes.add(409)
    return codes


def document(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer",
        "description": "Needed when the deployment sets COUNCILS_API_TOKEN or COUNCILS_API_TOKEN_FILE"}
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            responses = op.setdefault("responses", {})
            for code, description in SUCCESSES.get((method, path), {}).items():
                responses.setdefault(code, {"description": description,
                                            "content": {"application/json": {"schema": {"type": "object"}}}})
            for code in sorted(error_statuses(method, path)):
                entry = responses.setdefault(str(code), {})
                entry["description"] = DESCRIPTIONS[code]
                entry["content"] = {"application/json": {"schema": REF}}
                if code in HEADERS:
                    entry["headers"] = HEADERS[code]
            if path not in OPEN_PATHS:
                op["security"] = [{"bearer": []}, {}]
    # FastAPI's own 422 shapes are no longer referenced: drop them.
    schemas = components["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        rest = {**schema, "components": {**components, "schemas": {n: v for n, v in schemas.items() if n != unused}}}
        if unused in schemas and f"#/components/schemas/{unused}\"" not in json.dumps(rest):
            schemas.pop(unused)
    return schema


def install(api: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = document(get_openapi(
                title=api.title, version=api.version, openapi_version=api.openapi_version,
                description=api.description, routes=api.routes))
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
