"""/ui: the council viewer (serve_app/ui/, docs/ui.md), static files served with a strict Content-Security-Policy
and without a token (they hold no data; the auth middleware opens exactly serve_app.ui.PATHS, GET only);
/v1/whoami: the scope of the caller's token, behind the token like every /v1 route, so the page shows admin
actions only to an admin."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import auth, ui
from ..errors import ApiError
from .deps import AUTH, errors

router = APIRouter()
api_router = APIRouter(dependencies=AUTH)


def _file(name: str) -> Response:
    try:
        body = ui.read(name)
    except (KeyError, OSError):
        raise ApiError(404, f"no such file: /ui/{name}") from None
    return Response(body, media_type=ui.FILES[name], headers=ui.HEADERS)


@router.get(ui.PREFIX, include_in_schema=False)
@router.get(ui.PREFIX + "/", include_in_schema=False)
async def index() -> Response:
    return _file(ui.INDEX)


@router.get(ui.PREFIX + "/{name}", include_in_schema=False)
async def static_file(name: str) -> Response:
    return _file(name)


@api_router.get("/v1/whoami", responses=errors())
async def whoami(request: Request) -> dict:
    """{"scope": "admin" | "read" | "open"}: what the caller's token may do ("open": the API has no token)."""
    return {"scope": auth.caller_scope(request)}
