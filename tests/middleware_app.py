"""A small FastAPI app behind the ingress's two middlewares (the bearer-token check, then the body limit), for
tests/test_auth.py and tests/test_limits.py."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.testclient import TestClient

from serve_app import auth, limits


def middleware_app(token: str | None, max_body: int = 2048) -> TestClient:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/thing")
    async def thing():
        return {"ok": True}

    @app.post("/v1/echo")
    async def echo(request: Request):
        return {"bytes": len(await request.body())}

    app.add_middleware(limits.BodyLimitMiddleware, max_bytes=lambda: max_body)
    app.add_middleware(auth.BearerAuthMiddleware, auth=auth.TokenAuth({auth.ADMIN: token} if token else {}))
    return TestClient(app)
