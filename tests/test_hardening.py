"""Hardening without Ray: token loading and the auth middleware, the body limit (chunked too), limit
checks, JSON-safe errors, secret redaction, storable metadata, the chat -> deliberation mapping,
Valkey with a password / an ACL user / TLS URLs, and the CLI's up/down by PID file."""

from __future__ import annotations

import json
import math
import signal
import sys
import textwrap

import pytest
from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.testclient import TestClient

from actors.models.config import AppConfig
from actors.models.councils import CouncilUpsert, ScoringSpec
from actors.models.limits import Limits
from actors.models.requests import Constraints, DeliberationRequest
from serve_app import auth, limits, redact, validation
from serve_app.errors import ApiError, error_body
from serve_app.openai_compat import ChatCompletionRequest, to_deliberation
from tests.ray_cluster import wait_until

pytestmark = pytest.mark.valkey

TOKEN = "unit-test-token-7f3a9c2e"


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


def _app(token: str | None, max_body: int = 2048) -> TestClient:
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


def test_auth_middleware():
    client = _app(TOKEN)
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
    assert _app(None).get("/v1/thing").status_code == 200


def test_body_limit_with_and_without_content_length():
    client = _app(None, max_body=2048)
    assert client.post("/v1/echo", content=b"x" * 2048).json() == {"bytes": 2048}
    r = client.post("/v1/echo", content=b"x" * 2049)
    assert r.status_code == 413 and "2048" in r.json()["error"]["message"]

    def chunks(n):
        for _ in range(n):
            yield b"y" * 512

    assert client.post("/v1/echo", content=chunks(4)).json() == {"bytes": 2048}  # chunked, at the limit
    r = client.post("/v1/echo", content=chunks(10))  # chunked (no Content-Length), over it
    assert r.status_code == 413 and r.json()["error"]["status"] == 413
    r = client.post("/v1/echo", content=b"x", headers={"content-length": "abc"})
    assert r.status_code == 400


# -- limits ------------------------------------------------------------------------------------------
def test_request_limit_errors_name_the_field():
    lim = Limits(max_task_chars=10, max_rubric_chars=5, max_rounds=1, max_agents=2, max_tokens=64)
    req = DeliberationRequest(role="DEV", task="x" * 11, constraints=Constraints(rubric="r" * 6), rounds=2,
                              num_agents=3, max_tokens=65)
    errors = validation.request_errors(req, lim)
    assert [".".join(map(str, e["loc"])) for e in errors] == [
        "body.task", "body.constraints.rubric", "body.rounds", "body.num_agents", "body.max_tokens"]
    with pytest.raises(ApiError) as exc:
        validation.raise_for(errors)
    assert exc.value.status == 422 and exc.value.message.startswith("body.task: String should have at most 10")
    assert validation.request_errors(DeliberationRequest(role="DEV", task="ok"), lim) == []
    up = CouncilUpsert(agents=[{"id": f"a{i}", "engine": "e", "max_tokens": 100} for i in range(3)], rounds=2)
    assert {".".join(map(str, e["loc"])) for e in validation.council_errors(up.agents, up.rounds, lim)} == {
        "body.agents", "body.rounds", "body.agents.0.max_tokens", "body.agents.1.max_tokens", "body.agents.2.max_tokens"}


def test_roles_fullmatch_and_a_configured_pattern_only_narrows():
    assert validation.role_ok("DEV") and not validation.role_ok("DEV\n") and not validation.role_ok("dev")
    narrow = Limits(role_pattern=r"(DEV|QA)")
    assert validation.role_ok("QA", narrow) and not validation.role_ok("DATA", narrow)
    wide = Limits(role_pattern=r".*")  # cannot widen past ROLE_PATTERN
    assert not validation.role_ok("a/b", wide) and not validation.role_ok("council:x", wide)
    with pytest.raises(ValidationError, match="role_pattern"):
        Limits(role_pattern="([")
    with pytest.raises(ApiError) as exc:
        validation.check_role("DEV\n")
    assert exc.value.status == 422


def test_app_config_limits_bound_the_default_councils():
    base = {"engines": [{"name": "fake", "model": "m"}],
            "default_councils": {"engine": "fake", "agents_per_council": 3, "rounds": 2}}
    assert AppConfig.model_validate(base).limits == Limits()
    with pytest.raises(ValidationError, match="agents_per_council 3 > limits.max_agents 2"):
        AppConfig.model_validate({**base, "limits": {"max_agents": 2}})
    with pytest.raises(ValidationError, match="role 'QA' does not match"):
        AppConfig.model_validate({**base, "limits": {"role_pattern": "DEV|ARCHITECT|DEVOPS|DATA"}})
    with pytest.raises(ValidationError):  # over the hard ceiling
        AppConfig.model_validate({**base, "limits": {"max_agents": 65}})


# -- JSON-safe errors, storable inputs -----------------------------------------------------------------
def test_error_bodies_are_always_encodable_json():
    body = error_body(422, "role '\ud800' is invalid", [{"input": math.nan, "loc": ["body", "\udfff"], "ctx": {"e": ValueError("x")}}])
    text = json.dumps(body, ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")
    assert "\ufffd" in body["error"]["message"] and body["error"]["detail"][0]["input"] == "nan"


@pytest.mark.parametrize("metadata,needle", [
    ({"x": math.nan}, "plain JSON"),
    ({"x": "\udfff"}, "plain JSON"),
    ({"x": "y" * 20_000}, "over"),
    (json.loads("[" * 9 + "1" + "]" * 9) and {"deep": json.loads("[" * 9 + "1" + "]" * 9)}, "deeper"),
])
def test_metadata_must_be_storable(metadata, needle):
    with pytest.raises(ValidationError, match=needle):
        Constraints(metadata=metadata)
    Constraints(metadata={"task_id": "T-1", "nested": {"a": [1, 2, {"b": None}]}})


def test_scoring_weights_are_finite():
    for bad in (math.inf, -math.inf, math.nan, 1e7):
        with pytest.raises(ValidationError, match="finite"):
            ScoringSpec(weights={"syntax": bad})
    assert ScoringSpec(weights={"syntax": 2.0, "length": -1}).weights["syntax"] == 2.0


# -- secrets ---------------------------------------------------------------------------------------
def test_redaction():
    assert redact.redact_url("redis://127.0.0.1:6389/0") == "redis://127.0.0.1:6389/0"
    assert redact.redact_url("rediss://alice:s3cr%40t@valkey:6380/0?ssl_ca_certs=/ca.pem") == \
        "rediss://alice:***@valkey:6380/0?ssl_ca_certs=/ca.pem"
    assert redact.redact_url("redis://:pw123456@h:1/0") == "redis://:***@h:1/0"
    assert redact.redact_url("redis://h:1/0?password=abcdef&db=1") == "redis://h:1/0?password=***&db=1"
    redact.register_url("redis://:p%40ssw0rd@h:1/0")
    assert redact.scrub("auth p@ssw0rd failed (p%40ssw0rd)") == "auth *** failed (***)"


# -- chat completions -> deliberation ---------------------------------------------------------------
def _chat(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "council-DEV", **kw})


def test_chat_request_maps_to_a_deliberation():
    req = to_deliberation(_chat(messages=[
        {"role": "system", "content": "Prefer the standard library."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "developer", "content": [{"type": "text", "text": "Explain briefly."}]},
        {"role": "user", "content": [{"type": "text", "text": "Write a"}, {"type": "text", "text": "palindrome check."}]},
    ], max_completion_tokens=64, rounds=0, requirements=["handle empty strings"], metadata={"task_id": "T-9"},
        temperature=0.3, top_p=0.9, some_unknown_field=1), "DEV")
    assert req.role == "DEV" and req.task == ("Conversation so far:\nuser: first question\n\nassistant: an earlier answer"
                                              "\n\nThe request now:\nWrite a\npalindrome check.")
    assert req.constraints.rubric == "Prefer the standard library.\n\nExplain briefly."
    assert req.max_tokens == 64 and req.rounds == 0 and req.constraints.requirements == ["handle empty strings"]
    assert req.constraints.metadata == {"task_id": "T-9"}


def test_chat_keeps_the_newest_earlier_turns_that_fit_and_the_request_whole():
    from actors.protocol import TASK_CHARS

    history = []
    for i in range(40):
        history += [{"role": "user", "content": f"question {i} " + "q" * 80},
                    {"role": "assistant", "content": f"answer {i} " + "a" * 80}]
    req = to_deliberation(_chat(messages=[*history, {"role": "tool", "content": "tool output"},
                                          {"role": "user", "content": "Now add tests."}]), "DEV")
    assert req.task.endswith("The request now:\nNow add tests.") and len(req.task) <= TASK_CHARS
    assert "answer 39" in req.task and "question 0 " not in req.task and "tool output" not in req.task
    left_out = int(req.task.split("(", 1)[1].split(" ", 1)[0])
    assert 0 < left_out < 80 and req.task.count("\nuser: ") + req.task.count("\nassistant: ") == 80 - left_out
    # A request with no earlier turns is the last message alone; an empty last message is still a 422.
    assert to_deliberation(_chat(messages=[{"role": "user", "content": "just this"}]), "DEV").task == "just this"
    with pytest.raises(ApiError) as exc:
        to_deliberation(_chat(messages=[*history[:2], {"role": "user", "content": ""}]), "DEV")
    assert exc.value.status == 422 and "body.messages.2.content" in exc.value.message


@pytest.mark.parametrize("kw,needle", [
    ({"messages": [{"role": "system", "content": "rubric only"}]}, "body.messages: at least one message with role 'user'"),
    ({"messages": [{"role": "user", "content": ""}]}, "body.messages.0.content"),
    ({"messages": [{"role": "user", "content": "x" * 9000}]}, "body.messages.0.content: String should have at most 8000"),
    ({"messages": [{"role": "system", "content": "r" * 5000}, {"role": "user", "content": "x"}]}, "body.messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "only text content"),
    ({"messages": [{"role": "user", "content": "x"}], "rounds": 9}, "body.rounds"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 4096}, "body.max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "timeout_s": -1}, "body.timeout_s"),
])
def test_chat_request_errors_name_the_chat_fields(kw, needle):
    with pytest.raises(ApiError) as exc:
        to_deliberation(_chat(**kw), "DEV")
    assert exc.value.status == 422 and needle in exc.value.message, exc.value.message


def test_chat_request_model_bounds():
    with pytest.raises(ValidationError):
        _chat(messages=[{"role": "user", "content": "x"}], n=2)
    with pytest.raises(ValidationError):
        _chat(messages=[])


# -- Valkey credentials and TLS URLs -------------------------------------------------------------------
async def test_store_with_password_and_acl_user(tmp_path):
    import valkey as valkey_sync

    from actors.store import Store
    from councils_local.valkey_server import ValkeyProcess

    server = ValkeyProcess(tmp_path / "valkey", password="pw-0123456789").start()
    try:
        admin = valkey_sync.Valkey.from_url(server.url, decode_responses=True)
        admin.execute_command("ACL", "SETUSER", "councils", "on", ">user-pw-987654", "~councils:*", "+@all")
        admin.close()
        user_url = f"redis://councils:user-pw-987654@127.0.0.1:{server.port}/0"
        for url in (server.url, user_url):
            store = Store(url, "councils:")
            try:
                assert await store.ping()
                await store.bump("probe")
                assert (await store.stats())["probe"] >= 1
            finally:
                await store.close()
            # The council actor's constructor reads with the sync client from the same URL.
            sync = valkey_sync.from_url(url, decode_responses=True)
            assert sync.ping()
            sync.close()
        wrong = Store(f"redis://councils:wrong@127.0.0.1:{server.port}/0", "councils:")
        with pytest.raises(Exception) as exc:
            await wrong.ping()
        await wrong.close()
        assert "wrong" not in str(exc.value)
    finally:
        server.stop()


def test_rediss_url_uses_tls():
    import valkey as valkey_sync
    from valkey.asyncio.connection import SSLConnection as AsyncSSLConnection
    from valkey.connection import SSLConnection

    from actors.store import Store

    store = Store("rediss://councils:pw@valkey.example:6380/0?ssl_cert_reqs=required", "councils:")
    assert store.client.connection_pool.connection_class is AsyncSSLConnection
    sync = valkey_sync.from_url("rediss://councils:pw@valkey.example:6380/0")
    assert sync.connection_pool.connection_class is SSLConnection


def test_launcher_passes_valkey_credentials_and_tls_to_ray():
    from councils_local.ray_nodes import ray_redis_args

    assert ray_redis_args("redis://127.0.0.1:6389/0") == ("127.0.0.1:6389", None, None)
    assert ray_redis_args("rediss://alice:p%40ss@valkey.internal:6380/0") == ("rediss://valkey.internal:6380", "alice", "p@ss")
    assert ray_redis_args("redis://:pw@h") == ("h:6379", None, "pw")


# -- CLI up / down -----------------------------------------------------------------------------------
FAKE_LAUNCHER = textwrap.dedent("""
    import signal, sys, time
    # As the real launcher does: Ctrl-C is handled whatever SIGINT disposition was inherited (a shell's
    # background job, nohup and `make test &` start it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("fake launcher up", flush=True)
    try:
        while True:
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("fake launcher stopping", flush=True)
        sys.exit(0)
""")


def test_cli_up_and_down_by_pid_file(tmp_path, monkeypatch, capsys):
    from councils_local import cli
    from councils_local.cli import commands_local

    script = tmp_path / "fake_launcher.py"
    script.write_text(FAKE_LAUNCHER)
    monkeypatch.setattr(commands_local, "launcher_command", lambda *args: [sys.executable, str(script)])
    data = str(tmp_path / "data")
    # Started the way `make test &` starts everything: with SIGINT ignored, which a child inherits.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert cli.main(["up", "--data-dir", data, "--no-wait"]) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    info = json.loads((tmp_path / "data" / commands_local.PID_FILE).read_text())
    assert commands_local.read_pid(tmp_path / "data" / commands_local.PID_FILE)["pid"] == info["pid"]
    assert cli.main(["up", "--data-dir", data, "--no-wait"]) == 1  # one at a time
    assert "already running" in capsys.readouterr().err
    wait_until(lambda: "fake launcher up" in (tmp_path / "data" / commands_local.LOG_FILE).read_text(), 30, 0.1,
               what="fake launcher started")
    assert cli.main(["down", "--data-dir", data, "--timeout", "20"]) == 0
    assert f"stopped (pid {info['pid']})" in capsys.readouterr().out
    assert not (tmp_path / "data" / commands_local.PID_FILE).exists()
    assert "fake launcher stopping" in (tmp_path / "data" / commands_local.LOG_FILE).read_text()
    assert cli.main(["--json", "down", "--data-dir", data]) == 0
    assert json.loads(capsys.readouterr().out) == {"stopped": False, "running": False}
    # A stale PID file (a process that is not the one we started) is never signalled.
    (tmp_path / "data" / commands_local.PID_FILE).write_text(json.dumps({"pid": 1, "create_time": 0}))
    assert cli.main(["down", "--data-dir", data]) == 0 and "not running" in capsys.readouterr().out
