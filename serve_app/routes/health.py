"""/healthz (the process is alive) and /readyz (Valkey answers, councils restored, engines loaded): open routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .. import auth, security
from ..errors import error_responses
from .deps import Service

router = APIRouter()


@router.get("/healthz", responses=error_responses(503))
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(request: Request, service: Service) -> JSONResponse:
    # Details (error text may name internal hosts; Valkey's settings) only for callers with a token,
    # or on an API with no token that is bound to loopback (only local callers reach it).
    scope = auth.caller_scope(request)
    details = scope in (auth.ADMIN, auth.READ) or (scope == auth.OPEN and security.is_loopback(service.http_host))
    body = await service.readiness(details)
    return JSONResponse(body, status_code=200 if body["ready"] else 503)
