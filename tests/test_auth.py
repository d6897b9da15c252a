"""Who may call the API, without Ray or Valkey: the refusal to serve an open API on a network interface, the
tokens (from the environment or a file; a bad setting fails closed without showing the token), the bearer-token
middleware (default deny, a 401 before any body is read) and the read and admin scopes (docs/security.md)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from starlette.testclient import TestClient

from serve_app import auth, security
from tests.middleware_app import middleware_app

pytestmark = pytest.mark.unit

TOKEN = "unit-test-token-7f3a9c2e"
READ, ADMIN = "read-token-0123456789", "admin-token-9876543210"


# -- no open API on a network interface by accident ---------------------------------------------------
def test_check_exposure():
    security.check_exposure("127.0.0.1", auth_on=False, allow_unauthenticated=False)
    security.check_exposure("localhost", auth_on=False, allow_unauthenticated=False)
    security.check_exposure("::1", auth_on=False, allow_unauthenticated=False)
    security.check_exposure("0.0.0.0", auth_on=True, allow_unauthenticated=False)
    security.check_exposure("0.0.0.0", auth_on=False, allow_unauthenticated=True)  # on purpose
    for host in ("0.0.0.0", "10.1.2.3", "::", None):
        with pytest.raises(security.ExposureError, match="refusing to start") as exc:
            security.check_exposure(host, auth_on=False, allow_unauthenticated=False)
        assert "no API token" in str(exc.value) and "allow_unauthenticated" in str(exc.value)


def test_a_replica_bound_to_0000_without_a_token_refuses_to_start(monkeypatch):
    from serve_app import app as app_module
    from tests.ray_cluster import app_config

    for var in (auth.ENV_TOKEN, auth.ENV_TOKEN_FILE, auth.ENV_ADMIN_TOKEN, auth.ENV_ADMIN_TOKEN_FILE):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(security, "serve_http_host", lambda: "0.0.0.0")
    # The user class under Serve's ASGI wrapper: its constructor is what a replica runs first.
    ingress_cls = next(c for c in app_module.Ingress.func_or_class.__mro__ if "reconfigure" in c.__dict__)
    # Nothing listens there: the replica refuses before it builds a store or reaches Valkey.
    config = app_config("redis://127.0.0.1:9/0").model_dump(mode="json")
    with pytest.raises(security.ExposureError, match=r"bound to 0\.0\.0\.0.*no API token"):
        ingress_cls.__init__(ingress_cls.__new__(ingress_cls), config)


# -- token loading ---------------------------------------------------------------------------------
def test_token_from_env_or_file(tmp_path):
    assert auth.load_token({}) is None
    assert auth.load_token({auth.ENV_TOKEN: f"  {TOKEN}\n"}) == TOKEN
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert auth.load_token({auth.ENV_TOKEN_FILE: str(f)}) == TOKEN


@pytest.mark.parametrize("env_kind,problem", [
    ("both", "not both"), ("empty-file", "is empty"), ("missing-file", "cannot be read"), ("space", "printable"),
])
def test_bad_token_config_fails_closed_without_showing_the_token(tmp_path, env_kind, problem):
    f = tmp_path / "token"
    f.write_text("   \n")
    env = {"both": {auth.ENV_TOKEN: TOKEN, auth.ENV_TOKEN_FILE: str(f)},
           "empty-file": {auth.ENV_TOKEN_FILE: str(f)},
           "missing-file": {auth.ENV_TOKEN_FILE: str(tmp_path / "nope")},
           "space": {auth.ENV_TOKEN: TOKEN + " x"}}[env_kind]
    with pytest.raises(auth.AuthConfigError, match=problem) as exc:
        auth.load_token(env)
    assert TOKEN not in str(exc.value)


# -- the middleware --------------------------------------------------------------------------------------
def test_auth_middleware():
    client = middleware_app(TOKEN)
    assert client.get("/healthz").status_code == 200  # open
    r = client.get("/v1/thing")
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="councils"'
    assert "Authorization: Bearer" in r.json()["error"]["message"]
    for bad in ("Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", f"{TOKEN}"):
        r = client.get("/v1/thing", headers={"Authorization": bad})
        assert r.status_code == 401, bad
        assert TOKEN not in r.text
    assert 'error="invalid_token"' in client.get("/v1/thing", headers={"Authorization": "Bearer x"}).headers["www-authenticate"]
    assert client.get("/v1/thing", headers={"Authorization": f"Bearer {TOKEN}"}).json() == {"ok": True}
    assert client.get("/v1/thing", headers={"Authorization": f"bearer  {TOKEN} "}).status_code == 200
    # Unknown paths are closed too (default deny), and a 401 comes before any body is read.
    assert client.get("/nowhere").status_code == 401
    assert client.post("/v1/echo", content=b"x" * 10_000).status_code == 401
    # No token configured: open.
    assert middleware_app(None).get("/v1/thing").status_code == 200


# -- token scopes ----------------------------------------------------------------------------------------
def _scoped_app(environ, public_docs=False) -> TestClient:
    app = FastAPI()

    @app.get("/readyz")
    async def readyz(request: Request):
        return {"scope": auth.caller_scope(request)}

    @app.get("/openapi.json")
    async def doc():
        return {}

    @app.get("/v1/councils")
    async def councils():
        return {"ok": True}

    @app.put("/v1/councils/{role}")
    async def put(role: str):
        return {"ok": role}

    @app.delete("/v1/councils/{role}")
    async def delete(role: str):
        return {"ok": role}

    @app.post("/v1/deliberations")
    async def deliberate():
        return {"ok": True}

    app.add_middleware(auth.BearerAuthMiddleware, auth=auth.TokenAuth.from_env(environ, public_docs=public_docs))
    return TestClient(app)


def test_read_token_gets_403_on_council_writes_admin_token_does_everything():
    client = _scoped_app({auth.ENV_TOKEN: READ, auth.ENV_ADMIN_TOKEN: ADMIN})
    read, admin = {"Authorization": f"Bearer {READ}"}, {"Authorization": f"Bearer {ADMIN}"}
    assert client.get("/v1/councils", headers=read).status_code == 200
    assert client.post("/v1/deliberations", headers=read).status_code == 200
    for method in ("PUT", "DELETE"):
        r = client.request(method, "/v1/councils/DEV", headers=read)
        assert r.status_code == 403 and "admin token" in r.json()["error"]["message"], r.text
        assert READ not in r.text and ADMIN not in r.text
        assert client.request(method, "/v1/councils/DEV", headers=admin).status_code == 200
    assert client.get("/v1/councils", headers=admin).status_code == 200
    assert client.put("/v1/councils/DEV").status_code == 401
    # The OpenAPI document needs a token unless the config makes it public; health never does.
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/readyz").json() == {"scope": None}
    assert client.get("/readyz", headers=read).json() == {"scope": "read"}
    public = _scoped_app({auth.ENV_TOKEN: READ}, public_docs=True)
    assert public.get("/openapi.json").status_code == 200
    # One token alone has every scope (as before); no token: open.
    assert public.put("/v1/councils/DEV", headers=read).status_code == 200
    assert _scoped_app({}).put("/v1/councils/DEV").status_code == 200
    with pytest.raises(auth.AuthConfigError, match="must differ"):
        auth.load_tokens({auth.ENV_TOKEN: READ, auth.ENV_ADMIN_TOKEN: READ})
