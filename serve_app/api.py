"""The FastAPI app over one service: every error as JSON (serve_app/errors.py), the token and the body limit checked
before any route (auth.py, limits.py), then the routers of serve_app/routes/. The Serve ingress (app.py) builds
it once per replica over its CouncilService; the route tests build it over a fake service, without Ray."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import ResponseError as ValkeyResponseError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from . import actor_errors, auth, limits, redact
from .errors import ApiError, error_body, internal_error, new_error_id, validation_message
from .routes import councils, deliberations, events, health, openai, status, ui
from .service import CouncilService

log = logging.getLogger("councils.ingress")

ROUTERS = (health.router, councils.router, deliberations.router, events.router, status.router, openai.router,
           ui.api_router, ui.router)


def build_api(service: CouncilService, tokens: auth.TokenAuth | None = None) -> FastAPI:
    """The app: `service` is what the routes call (serve_app/service.py's CouncilService, or a fake); `tokens`:
    the replica's (default: read from the environment now)."""
    api = FastAPI(title="Councils on Ray", version="0.1.0",
                  description="Durable LLM deliberation councils as detached Ray actors, persisted in Valkey.")
    api.state.service = service
    install_error_handlers(api)
    # Outermost last: the token is checked before anything else, then the body is bounded before any route reads it.
    api.add_middleware(limits.BodyLimitMiddleware, max_bytes=lambda: service.limits.max_body_bytes)
    api.add_middleware(auth.BearerAuthMiddleware, auth=tokens or auth.TokenAuth.from_env())
    for router in ROUTERS:
        api.include_router(router)
    return api


def _json(status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None,
          error_id: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, detail, error_id), status_code=status, headers=headers)


def install_error_handlers(api: FastAPI) -> None:
    """Every error answers JSON in one shape; no input answers a bare 500 page."""

    @api.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return _json(exc.status, exc.message, exc.detail, exc.headers, exc.error_id)

    async def _actor_error(request: Request, exc: Exception):
        # The store's and the actors' typed exceptions (caps, a full registry, orchestrate on a gone deliberation):
        # serve_app/actor_errors.py says what each answers. The MRO finds the class through Ray's wrapper of an
        # actor's exception too (a subclass of RayTaskError and of the original).
        service = request.app.state.service
        answer = next(h for cls, h in actor_errors.HANDLERS.items() if isinstance(exc, cls))
        error = await answer(actor_errors.cause(exc), service.store, service.limits)
        return _json(error.status, error.message, error.detail, error.headers)

    for exc_class in actor_errors.HANDLERS:
        api.add_exception_handler(exc_class, _actor_error)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        return _json(422, validation_message(exc.errors()), exc.errors())

    @api.exception_handler(ValidationError)
    async def _model_error(_request: Request, exc: ValidationError):
        return _json(422, validation_message(exc.errors()), exc.errors(include_url=False))

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        return _json(exc.status_code, str(exc.detail))

    @api.exception_handler(ValkeyConnectionError)
    @api.exception_handler(ValkeyTimeoutError)
    async def _valkey_down(_request: Request, exc: Exception):
        return _json(503, f"Valkey unavailable: {type(exc).__name__}", headers={"Retry-After": "5"})

    @api.exception_handler(ValkeyResponseError)
    async def _valkey_refused(_request: Request, exc: Exception):
        """Valkey at maxmemory (noeviction) refuses writes: 503 with Retry-After. The write that was refused was
        one command, script or transaction, so nothing of it was stored (docs/security.md)."""
        text = str(exc)
        if "OOM" in text or "maxmemory" in text or "EXECABORT" in text:
            return _json(503, "Valkey is full (maxmemory reached): nothing was written; retry later",
                         headers={"Retry-After": "30"})
        error_id = new_error_id()
        log.error("Valkey refused a command (error id %s): %s", error_id, redact.scrub(text))
        return _json(503, f"Valkey error (error id {error_id})", headers={"Retry-After": "5"}, error_id=error_id)

    @api.middleware("http")
    async def _last_resort(request: Request, call_next):
        try:
            return await call_next(request)
        except Exception:  # a JSON error with an id, the detail logged: never a bare 500 page, never internal text
            error = internal_error(log, f"unhandled error on {request.method} {request.url.path}")
            return _json(error.status, error.message, error_id=error.error_id)
