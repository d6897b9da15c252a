"""Secure by default (issue 12, docs/security.md), without Ray: the exposure check of the ingress, token
scopes, the global active cap and the council caps in Valkey (atomic under a burst), the embedded Valkey's
password / protected mode / maxmemory with nothing secret on its command line, SSE deadline and connection
cap, strict ids, and the CLI's token sources and terminal-safe output."""

from __future__ import annotations

import asyncio
import os
import stat
import time

import pytest
from fastapi import FastAPI, Request
from starlette.testclient import TestClient

from actors.models.councils import default_council
from actors.models.records import DeliberationRecord
from actors.models.requests import DeliberationRequest
from serve_app import auth, security, sse
from serve_app.errors import ApiError

pytestmark = pytest.mark.valkey

READ, ADMIN = "read-token-0123456789", "admin-token-9876543210"


# -- 1. no open API on a network interface by accident -----------------------------------------------------
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


def test_a_replica_bound_to_0000_without_a_token_refuses_to_start(monkeypatch, valkey_server):
    from serve_app import app as app_module
    from tests.ray_cluster import app_config

    for var in (auth.ENV_TOKEN, auth.ENV_TOKEN_FILE, auth.ENV_ADMIN_TOKEN, auth.ENV_ADMIN_TOKEN_FILE):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(security, "serve_http_host", lambda: "0.0.0.0")
    # The user class under Serve's ASGI wrapper: its constructor is what a replica runs first.
    ingress_cls = next(c for c in app_module.Ingress.func_or_class.__mro__ if "reconfigure" in c.__dict__)
    config = app_config(valkey_server.url).model_dump(mode="json")
    with pytest.raises(security.ExposureError, match=r"bound to 0\.0\.0\.0.*no API token"):
        ingress_cls.__init__(ingress_cls.__new__(ingress_cls), config)


# -- 2. token scopes --------------------------------------------------------------------------------------
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


# -- 3. limits in Valkey: atomic under a burst -----------------------------------------------------------------
async def test_global_active_cap_holds_under_a_burst_of_50(store):
    from actors.store import CouncilBusy, ServiceBusy

    roles = ["DEV", "QA", "DATA", "OPS", "SEC"]
    for role in roles:
        await store.put_council(default_council(role, "fake"))
    records = [DeliberationRecord(request=DeliberationRequest(role=roles[i % 5], task=f"t{i}")) for i in range(50)]
    outcomes = await asyncio.gather(*(store.create_record(r, max_active=4, max_active_total=7) for r in records),
                                    return_exceptions=True)
    created = [o for o in outcomes if isinstance(o, tuple)]
    assert len(created) == 7 and all(is_new for _, is_new in created)
    assert all(isinstance(o, (ServiceBusy, CouncilBusy)) for o in outcomes if not isinstance(o, tuple))
    assert sum(isinstance(o, ServiceBusy) for o in outcomes) >= 50 - 7 - 5
    assert sum([await store.active_count(role) for role in roles]) == 7
    refused = [r for r, o in zip(records, outcomes) if not isinstance(o, tuple)]
    assert [await store.get_record(r.id) for r in refused] == [None] * len(refused)  # nothing half-written
    # A retry of an accepted id is not refused by the cap.
    first = created[0][0]
    again, is_new = await store.create_record(DeliberationRecord(id=first.id, request=first.request),
                                              max_active=4, max_active_total=7)
    assert not is_new and again.id == first.id


async def test_council_caps_are_atomic(store):
    from actors.store import RegistryFull

    outcomes = await asyncio.gather(*(store.put_council_capped(default_council(f"C{i}", "fake", 2), 4, 100)
                                      for i in range(12)), return_exceptions=True)
    assert sum(isinstance(o, tuple) for o in outcomes) == 4
    assert all(isinstance(o, RegistryFull) and o.limit == "max_councils" for o in outcomes if not isinstance(o, tuple))
    assert len(await store.list_councils()) == 4
    existing = (await store.list_councils())[0]
    stored, created = await store.put_council_capped(existing, 4, 100)  # replacing one is not a new council
    assert not created and stored.version == 2
    with pytest.raises(RegistryFull) as exc:  # 3 others x 2 agents + 5 > 10
        await store.put_council_capped(default_council(existing.role, "fake", 5), 4, 10)
    assert exc.value.limit == "max_agents_total"
    assert (await store.get_council(existing.role)).agents == existing.agents


# -- 4. the embedded Valkey -------------------------------------------------------------------------------
def test_embedded_valkey_password_protected_mode_maxmemory_nothing_on_its_command_line(tmp_path):
    import valkey

    from councils_local.valkey_server import ValkeyProcess

    server = ValkeyProcess(tmp_path / "v", maxmemory="64mb").start()
    try:
        password = (tmp_path / "v" / "password").read_text().strip()
        assert server.password == password and len(password) >= 32
        for name in ("password", "valkey.conf"):
            assert stat.S_IMODE(os.stat(tmp_path / "v" / name).st_mode) == 0o600, name
        assert stat.S_IMODE(os.stat(tmp_path / "v").st_mode) == 0o700
        cmdline = (open(f"/proc/{server.proc.pid}/cmdline", "rb").read()).decode()
        assert password not in cmdline
        with pytest.raises(valkey.AuthenticationError):
            valkey.Valkey(port=server.port).ping()
        client = valkey.Valkey.from_url(server.url, decode_responses=True)
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert int(client.config_get("maxmemory")["maxmemory"]) == 64 * 1024 * 1024
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        client.close()
    finally:
        server.stop()
    again = ValkeyProcess(tmp_path / "v").start()  # a restart keeps the password (and so the data) reachable
    try:
        assert again.password == password
    finally:
        again.stop()


# -- 5. SSE: deadline and connection cap ---------------------------------------------------------------------
async def test_an_sse_stream_on_a_stuck_record_ends_at_its_deadline(store):
    from tests.test_sse import collect

    record = DeliberationRecord(request=DeliberationRequest(role="DEV", task="t", constraints={"timeout_s": 1}),
                                status="in_progress", created_at=time.time() - 100)
    await store.create_record(record)
    await store.add_event(record.id, "stage.started", {"stage": "propose"})
    started = time.time()
    events = await asyncio.wait_for(collect(sse.event_stream(store, record.id, slice_ms=50,
                                                             deadline=record.deadline + 30)), 10)
    assert time.time() - started < 5
    assert [e["event"] for e in events] == ["closed"] and events[-1]["data"]["status"] == "in_progress"
    # Before the deadline it streams what there is (and would wait for more).
    live = sse.event_stream(store, record.id, slice_ms=50, deadline=time.time() + 60)
    assert "stage.started" in [(await live.__anext__()).event for _ in range(2)]
    await live.aclose()


async def test_sse_slots_per_replica_are_released_however_a_stream_ends():
    slots = sse.StreamSlots()
    assert slots.open == 0
    assert slots.try_open(2) and slots.try_open(2) and not slots.try_open(2)

    async def chunks():
        yield "a"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        async for _ in slots.counted(chunks()):
            pass
    assert slots.open == 1 and slots.try_open(2)
    slots.release()
    slots.release()
    assert slots.open == 0


# -- 6. strict ids, terminal-safe CLI, the CLI's token ------------------------------------------------------
def test_ids_fullmatch_no_trailing_newline():
    from serve_app.records import check_delib_id

    good = "0123456789abcdef" * 2
    assert check_delib_id(good) == good
    for bad in (good + "\n", good + "\r", "\n" + good, good[:-1]):
        with pytest.raises(ApiError):
            check_delib_id(bad)
    assert sse.valid_stream_id("1700000000000-0")
    assert not sse.valid_stream_id("1700000000000-0\n") and not sse.valid_stream_id("1-0 ")


def test_cli_output_is_terminal_safe(capsys):
    from councils_local.cli import render

    evil = "def f():\n\treturn 1\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\\x9b31m\u202eok\r"
    record = {"id": "d" * 32, "status": "completed", "result": {
        "winner_id": "a\x1b[31m1", "duration_s": 1.0, "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        "proposals": [{"rank": 1, "author": "a\x1b[31m1", "score": 1.0, "content": evil, "checks": []}]}}
    render.print_result(record)
    render.out(render.describe("failed", {"error": "boom\x1b[5m"}))
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed and "\x9b" not in printed and "\u202e" not in printed
    assert "def f():\n\treturn 1" in printed and "click" in printed


def test_cli_reads_its_token_from_a_file_or_the_environment(tmp_path):
    from councils_local.cli.client import CliError, resolve_token

    token_file = tmp_path / "token"
    token_file.write_text("file-token-123\n")
    admin_file = tmp_path / "admin"
    admin_file.write_text("admin-token-456\n")
    assert resolve_token(None, str(token_file), environ={}) == "file-token-123"
    assert resolve_token("given", str(token_file), environ={}) == "given"
    assert resolve_token(None, None, environ={"COUNCILS_API_TOKEN_FILE": str(token_file)}) == "file-token-123"
    assert resolve_token(None, None, environ={"COUNCILS_API_TOKEN": "env-token"}) == "env-token"
    env = {"COUNCILS_API_TOKEN_FILE": str(token_file), "COUNCILS_ADMIN_TOKEN_FILE": str(admin_file)}
    assert resolve_token(None, None, admin=True, environ=env) == "admin-token-456"  # create, delete
    assert resolve_token(None, None, environ=env) == "file-token-123"
    assert resolve_token(None, None, environ={}) is None
    with pytest.raises(CliError, match="cannot be read"):
        resolve_token(None, None, environ={"COUNCILS_API_TOKEN_FILE": str(tmp_path / "nope")})
