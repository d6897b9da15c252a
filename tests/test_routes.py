"""The HTTP routes and the one validation step, in-process: FastAPI's TestClient over the app that serve_app/api.py
builds, with the real CouncilService on an in-memory store and registry (tests/memory_store.py) or a fake
service. No Valkey, no Ray."""

from __future__ import annotations

import json
import math
import time

import pytest
from httpx_sse import connect_sse
from starlette.testclient import TestClient

from actors.models.config import RuntimeSettings
from actors.models.councils import default_council
from actors.models.records import DeliberationRecord, DeliberationResult, Proposal, Usage
from actors.models.requests import DeliberationRequest
from serve_app.api import build_api
from serve_app.errors import ApiError, error_body
from tests.memory_store import memory_app, memory_service

pytestmark = pytest.mark.unit


@pytest.fixture
def service():
    return memory_service()


@pytest.fixture
def client(service):
    with TestClient(build_api(service)) as c:
        yield c


def message(r) -> str:
    return r.json()["error"]["message"]


# -- councils: PUT accepts what GET returns ----------------------------------------------------------------
def test_put_accepts_what_get_returns(client):
    got = client.get("/v1/councils/DEV").json()
    assert got["role"] == "DEV" and got["version"] == 1 and got["created_at"] == 1.0
    r = client.put("/v1/councils/DEV", json={**got, "rounds": 2})  # version, created_at, updated_at: read-only
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["created_at"] == 1.0 and r.json()["rounds"] == 2
    r = client.put("/v1/councils/DEV", json={k: v for k, v in got.items() if k != "role"})  # role may be left out
    assert r.status_code == 200 and r.json()["version"] == 3


def test_put_role_must_match_the_path_unknown_fields_refused(client):
    got = client.get("/v1/councils/DEV").json()
    r = client.put("/v1/councils/DEV", json={**got, "role": "QA"})
    assert r.status_code == 422 and "body.role" in message(r)
    r = client.put("/v1/councils/DEV", json={**got, "agentz": []})
    assert r.status_code == 422 and "agentz" in message(r)
    assert client.get("/v1/councils/DEV").json()["version"] == 1  # nothing written


def test_council_writes(client, service):
    agents = [{"id": "sec-1", "engine": "fake"}, {"id": "sec-2", "engine": "fake"}]
    r = client.put("/v1/councils/SEC", json={"agents": agents})
    assert r.status_code == 201 and r.json()["version"] == 1
    assert ("SEC.reload", ()) in service.registry.calls
    r = client.put("/v1/councils/SEC", json={"agents": [{"id": "x", "engine": "ghost"}]})
    assert r.status_code == 422 and "ghost" in message(r)
    assert client.post("/v1/councils/SEC/agents", json={"id": "sec-3", "engine": "fake"}).status_code == 201
    assert client.post("/v1/councils/SEC/agents", json={"id": "sec-3", "engine": "fake"}).status_code == 409
    assert client.delete("/v1/councils/SEC/agents/nobody").status_code == 404
    assert client.delete("/v1/councils/SEC/agents/sec-3").status_code == 200
    assert client.delete("/v1/councils/SEC").json() == {"deleted": "SEC"}
    assert client.get("/v1/councils/SEC").status_code == 404
    assert client.get("/v1/councils/dev").status_code == 422  # a bad role never reaches a key
    assert client.get("/v1/councils").json()["count"] == 2


def test_a_council_declared_in_the_config_is_409_for_api_writes():
    declared = {"role": "DEV", **default_council("DEV", "fake").model_dump(mode="json", include={"agents"})}
    app = memory_app(memory_service(config={"councils": [declared]}))
    with TestClient(app) as client:
        got = client.get("/v1/councils/DEV").json()
        for r in (client.put("/v1/councils/DEV", json=got), client.delete("/v1/councils/DEV")):
            assert r.status_code == 409 and "args.councils of Serve application 'councils'" in message(r)


# -- deliberations: one validation step ---------------------------------------------------------------------
def test_accepted_request_is_resolved_against_council_and_live_settings(client, service):
    service.apply_settings(RuntimeSettings(default_timeout_s=42))
    r = client.post("/v1/deliberations", json={"role": "DEV", "task": "Reverse a list."})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status_url"] == f"/v1/deliberations/{body['id']}" and body["events_url"].endswith("/events")
    record = service.store.records[body["id"]]
    assert (record.request.rounds, record.request.num_agents, record.request.constraints.timeout_s) == (1, 3, 42)
    assert ("DEV.submit", (body["id"],)) in service.registry.calls
    got = client.get(f"/v1/deliberations/{body['id']}").json()
    assert got["progress"] == {"stages_done": 0, "stages_total": 5, "last_stage": None}


def test_every_bad_field_in_one_422_in_one_shape(client, service):
    service.apply_settings(RuntimeSettings(default_timeout_s=60, max_timeout_s=100, limits={"max_task_chars": 10}))
    r = client.post("/v1/deliberations", json={"role": "DEV", "task": "x" * 11, "num_agents": 5,
                                               "constraints": {"timeout_s": 101}})
    assert r.status_code == 422
    locs = [".".join(map(str, e["loc"])) for e in r.json()["error"]["detail"]]
    assert locs == ["body.task", "body.constraints.timeout_s", "body.num_agents"]
    assert message(r).startswith("body.task: String should have at most 10 characters")
    assert "num_agents=5 but council DEV has 3 agents" in message(r)
    assert "timeout_s=101 is over the limit of 100s" in message(r)
    assert not service.store.records


@pytest.mark.parametrize("payload,status,needle", [
    ({"role": "NOPE", "task": "x"}, 404, "council 'NOPE' not found"),
    ({"role": "dev", "task": "x"}, 422, "body.role"),
    ({"role": "DEV", "task": ""}, 422, "body.task"),
    ({"role": "DEV", "task": "x", "rounds": 6}, 422, "body.rounds"),
    ({"role": "DEV", "task": "x", "extra": 1}, 422, "body.extra"),
])
def test_bad_deliberation_requests(client, payload, status, needle):
    r = client.post("/v1/deliberations", json=payload)
    assert r.status_code == status and needle in message(r), r.text


def test_idempotency_key_returns_the_first_deliberation_or_409(client, service):
    headers = {"Idempotency-Key": "ticket-1"}
    first = client.post("/v1/deliberations", json={"role": "QA", "task": "Plan."}, headers=headers).json()
    again = client.post("/v1/deliberations", json={"role": "QA", "task": "Plan."}, headers=headers).json()
    assert first["id"] == again["id"] and len(service.store.records) == 1
    r = client.post("/v1/deliberations", json={"role": "QA", "task": "Other."}, headers=headers)
    assert r.status_code == 409 and "Idempotency-Key" in message(r)
    assert first["id"] not in r.text  # issue 23: the 409 never names the record (it may be another client's)
    r = client.post("/v1/deliberations", json={"role": "QA", "task": "x"}, headers={"Idempotency-Key": "x" * 256})
    assert r.status_code == 422


def test_idempotency_ids_are_an_hmac_under_the_servers_secret(service):
    """Issue 23: the id a key stands for is HMAC-SHA256(secret, role + key), not a bare hash anyone can compute
    from a guessed key; another secret gives other ids, and without a configured file the secret the service
    keeps in its store is used (generated once, the same for every replica)."""
    import asyncio
    import hashlib
    import hmac

    from serve_app.records import idempotent_id

    secret = b"s" * 32
    got = idempotent_id("QA", "ticket-1", secret)
    assert got == hmac.new(secret, b"QA\nticket-1", hashlib.sha256).hexdigest()[:32]
    assert got != hashlib.sha256(b"QA\nticket-1").hexdigest()[:32]  # the old, unsalted id
    assert idempotent_id("QA", "ticket-1", b"t" * 32) != got and idempotent_id("DEV", "ticket-1", secret) != got
    assert idempotent_id("QA", None, secret) is None
    with pytest.raises(ValueError):
        idempotent_id("QA", "ticket-1", b"short")

    stored = asyncio.run(service.idempotency_secret())
    assert len(stored) == 64 and asyncio.run(service.idempotency_secret()) == stored
    with TestClient(build_api(service)) as client:
        first = client.post("/v1/deliberations", json={"role": "QA", "task": "Plan."},
                            headers={"Idempotency-Key": "ticket-1"}).json()
    assert first["id"] == idempotent_id("QA", "ticket-1", stored)


def test_the_idempotency_secret_comes_from_a_file_and_a_bad_one_stops_the_replica(tmp_path):
    from serve_app.records import SecretConfigError, load_idempotency_secret

    path = tmp_path / "idempotency-secret"
    path.write_text("a" * 64 + "\n")
    assert load_idempotency_secret({"COUNCILS_IDEMPOTENCY_SECRET_FILE": str(path)}) == b"a" * 64
    assert load_idempotency_secret({}) is None  # the service then uses the one it keeps in Valkey
    for environ, needle in [({"COUNCILS_IDEMPOTENCY_SECRET_FILE": str(tmp_path / "missing")}, "cannot be read"),
                            ({"COUNCILS_IDEMPOTENCY_SECRET": "short"}, "at least 16"),
                            ({"COUNCILS_IDEMPOTENCY_SECRET": "b" * 32,
                              "COUNCILS_IDEMPOTENCY_SECRET_FILE": str(path)}, "not both")]:
        with pytest.raises(SecretConfigError, match=needle) as info:
            load_idempotency_secret(environ)
        assert "b" * 32 not in str(info.value) and "a" * 64 not in str(info.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretConfigError, match="is empty"):
        load_idempotency_secret({"COUNCILS_IDEMPOTENCY_SECRET_FILE": str(tmp_path / "empty")})


def test_make_run_generates_the_idempotency_secret_once_0600(tmp_path):
    import stat

    from councils_local.ray_nodes import idempotency_secret

    path = idempotency_secret(tmp_path)
    value = path.read_text()
    assert len(value.strip()) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert idempotency_secret(tmp_path).read_text() == value  # kept: ids stay the same across restarts


def test_malformed_and_oversized_bodies_answer_json(client, service):
    r = client.post("/v1/deliberations", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["status"] == 422
    r = client.post("/v1/deliberations", content=b"x" * (service.limits.max_body_bytes + 1))
    assert r.status_code == 413
    assert client.get("/v1/deliberations/" + "0" * 32 + "%0A").status_code == 404
    assert client.get("/v1/deliberations/" + "0" * 32).status_code == 404
    r = client.get("/v1/deliberations/" + "0" * 32 + "/events")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"


def test_chat_completions_validation_names_the_chat_fields(client):
    r = client.post("/v1/chat/completions", json={"model": "council-NOPE", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = client.post("/v1/chat/completions", json={"model": "council-DEV", "messages": [{"role": "user", "content": ""}]})
    assert r.status_code == 422 and "body.messages.0.content" in message(r)
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["council-DEV", "council-QA"]


def test_health_readiness_and_status(client, service):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["councils_restored"] is False
    service.restored = service.engines_ready = True
    r = client.get("/readyz")
    assert r.status_code == 200 and "error" in r.json()  # loopback and open: details shown
    status = client.get("/v1/status").json()
    assert [c["role"] for c in status["councils"]] == ["DEV", "QA"]
    assert status["engine_replicas"] == {"fake": [{"actor": "engine-fake", "alive": False, "error": "no such actor"}]}
    assert status["latency_s"]["DEV"] == {"count": 1, "p50": 3.0, "p95": 3.0, "p99": 3.0}
    assert status["stage_latency_s"]["DEV"] == {"propose": {"count": 1, "p50": 2.0, "p95": 2.0, "p99": 2.0},
                                                "critique": {"count": 2, "p50": 0.5, "p95": 0.7, "p99": 0.7}}


# -- Server-Sent Events as a client reads them (httpx-sse); the wire format docs/api.md and docs/openai.md show ----
ANSWER = "def reverse(xs):\n    return xs[::-1]  # é …" * 3


def finished_deliberation(service) -> DeliberationRecord:
    """A completed deliberation in the in-memory store, with its stage events up to the terminal one."""
    record = DeliberationRecord(request=DeliberationRequest(role="DEV", task="t"), status="completed",
                                created_at=time.time())
    record.result = DeliberationResult(proposals=[Proposal(author="agent-dev-001", content=ANSWER, score=1.0, rank=1)],
                                       winner_id="agent-dev-001", duration_s=1.5,
                                       usage=Usage(prompt_tokens=3, completion_tokens=4))
    service.store.records[record.id] = record
    service.store.events[record.id] = [("1-0", "stage.started", {"stage": "propose"}),
                                       ("2-0", "proposal", {"author": "agent-dev-001", "content": "a\nb é"}),
                                       ("3-0", "completed", {"status": "completed", "winner_id": "agent-dev-001"})]
    return record


def test_events_stream_wire_format_and_resume(client, service):
    url = f"/v1/deliberations/{finished_deliberation(service).id}/events"
    r = client.get(url)
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    assert r.text == ('retry: 2000\n\n'
                      'id: 1-0\nevent: stage.started\ndata: {"stage":"propose"}\n\n'
                      'id: 2-0\nevent: proposal\ndata: {"author":"agent-dev-001","content":"a\\nb \\u00e9"}\n\n'
                      'id: 3-0\nevent: completed\ndata: {"status":"completed","winner_id":"agent-dev-001"}\n\n')
    with connect_sse(client, "GET", url, headers={"Last-Event-ID": "1-0"}) as source:
        events = [(e.id, e.event, e.json()) for e in source.iter_sse() if e.data]
    assert events == [("2-0", "proposal", {"author": "agent-dev-001", "content": "a\nb é"}),
                      ("3-0", "completed", {"status": "completed", "winner_id": "agent-dev-001"})]
    with connect_sse(client, "GET", url, params={"last_event_id": "3-0"}) as source:
        assert [e.retry for e in source.iter_sse()] == [2000]  # after the end: nothing more
    assert service.streams.open == 0  # every stream gave its slot back


def test_chat_stream_chunks_then_done(client, service, monkeypatch):
    record = finished_deliberation(service)

    async def accept(request, idempotency_key=None):
        return record

    monkeypatch.setattr(service, "accept", accept)
    body = {"model": "council-DEV", "messages": [{"role": "user", "content": "t"}], "stream": True,
            "stream_options": {"include_usage": True}}
    with connect_sse(client, "POST", "/v1/chat/completions", json=body) as source:
        assert source.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        data = [e.data for e in source.iter_sse()]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and chunks[0]["id"] == f"chatcmpl-{record.id}"
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [d["council"] for d in deltas[1:3]] == [{"event": "stage.started", "stage": "propose"},
                                                   {"event": "proposal", "author": "agent-dev-001"}]
    assert "".join(d.get("content") or "" for d in deltas[1:]) == ANSWER
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["council"]["winner_id"] == "agent-dev-001"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7
    wire = client.post("/v1/chat/completions", json=body).text
    assert wire.startswith('data: {"id":"chatcmpl-') and wire.endswith("}\n\ndata: [DONE]\n\n") and "\r" not in wire
    assert service.streams.open == 0


# -- waiters: capped per replica, bounded in time (issue 23) -------------------------------------------------
CHAT = {"model": "council-DEV", "messages": [{"role": "user", "content": "Plan."}]}


def test_a_waiter_answers_202_with_the_status_url_after_max_wait_s(client, service):
    service.apply_settings(RuntimeSettings(max_wait_s=0.2))
    for path, body in [("/v1/deliberations?wait=true", {"role": "DEV", "task": "Plan."}),
                       ("/v1/chat/completions", CHAT)]:
        started = time.monotonic()
        r = client.post(path, json=body)
        assert r.status_code == 202, (path, r.text)
        assert 0.2 <= time.monotonic() - started < 5
        delib_id = r.json()["id"]
        assert r.json()["status_url"] == f"/v1/deliberations/{delib_id}" and delib_id in service.store.records
    assert service.waiters.open == 0


def test_waiters_over_max_waiters_get_202_at_once_and_orchestrate_429(client, service):
    service.apply_settings(RuntimeSettings(max_wait_s=60, limits={"max_waiters": 2}))
    service.waiters.open = 2  # two requests already wait on this replica
    started = time.monotonic()
    r = client.post("/v1/deliberations?wait=true", json={"role": "DEV", "task": "Plan."})
    assert r.status_code == 202 and r.json()["status_url"].endswith(r.json()["id"])
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 202 and r.json()["id"] in service.store.records
    assert time.monotonic() - started < 5  # neither waited
    before = len(service.store.records)
    r = client.post("/v1/orchestrate", json={"role": "DEV", "task": "Plan."})
    assert r.status_code == 429 and "limits.max_waiters" in message(r) and r.headers["retry-after"] == "10"
    assert len(service.store.records) == before  # nothing started
    assert service.waiters.open == 2  # every refused waiter left the count as it was


def test_a_waiter_under_the_caps_gets_the_finished_record(client, service, monkeypatch):
    record = finished_deliberation(service)

    async def accept(request, idempotency_key=None):
        return record

    monkeypatch.setattr(service, "accept", accept)
    r = client.post("/v1/deliberations?wait=true", json={"role": "DEV", "task": "t"})
    assert r.status_code == 200 and r.json()["status"] == "completed"
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    assert service.waiters.open == 0


def test_the_typed_exceptions_of_the_store_and_the_actors_answer_their_status(client, service, monkeypatch):
    """serve_app/actor_errors.py is the one place they become HTTP; the service lets them rise."""
    from ray.exceptions import RayTaskError

    from actors.orchestrate import NotOrchestrable
    from actors.store import ServiceBusy

    full = len(service.store.councils)
    service.apply_settings(RuntimeSettings(limits={"max_active_per_council": 1, "max_councils": full}))
    assert client.post("/v1/deliberations", json={"role": "DEV", "task": "one"}).status_code == 202
    r = client.post("/v1/deliberations", json={"role": "DEV", "task": "two"})  # CouncilBusy
    assert r.status_code == 429 and "council DEV is busy: 1 deliberations" in message(r)
    assert r.headers["retry-after"] == "3"  # the council's median deliberation (the store's sample: 3.0 s)
    got = client.get("/v1/councils/DEV").json()
    r = client.put("/v1/councils/PERF", json={**got, "role": "PERF"})  # RegistryFull
    assert r.status_code == 422 and "limits.max_councils" in message(r) and "PERF" not in service.store.councils

    async def all_busy(record, **caps):
        raise ServiceBusy(7)

    monkeypatch.setattr(service.store, "create_record", all_busy)
    r = client.post("/v1/deliberations", json={"role": "DEV", "task": "three"})
    assert r.status_code == 429 and "the service is busy: 7" in message(r) and r.headers["retry-after"] == "10"

    record = finished_deliberation(service)

    async def accept(request, idempotency_key=None):
        return record

    async def gone(delib_id, top_k):  # as Ray re-raises an actor's exception: its class and RayTaskError's
        raise RayTaskError("orchestrate", "Traceback: File /srv/councils/actors/council.py on 10.0.0.7",
                           NotOrchestrable(delib_id)).as_instanceof_cause()

    monkeypatch.setattr(service, "accept", accept)
    monkeypatch.setattr(service.registry.council_calls("DEV").__class__, "orchestrate", lambda self, i, k: gone(i, k))
    r = client.post("/v1/orchestrate", json={"role": "DEV", "task": "Plan."})
    assert r.status_code == 404 and message(r) == f"deliberation {record.id} not found"  # no remote traceback


# -- routes over a fake service -----------------------------------------------------------------------------
class DownService:
    """A service whose every call fails as the real one does when Valkey or a council is away."""

    limits = memory_service().limits

    async def list_councils(self):
        raise ApiError(503, "Valkey unavailable: ConnectionError", headers={"Retry-After": "5"})

    async def council(self, role):
        raise RuntimeError("boom: not an ApiError")


def test_routes_turn_service_errors_into_json(caplog):
    with TestClient(build_api(DownService())) as client:
        r = client.get("/v1/councils")
        assert r.status_code == 503 and r.headers["retry-after"] == "5" and "Valkey" in message(r)
        with caplog.at_level("ERROR", logger="councils.ingress"):
            r = client.get("/v1/councils/DEV")
    # Issue 23: an unexpected error tells the caller a generic message and an id, never the exception's text
    # (remote tracebacks name hosts and IPs); the log line with that id has the detail.
    error = r.json()["error"]
    assert r.status_code == 503 and "boom" not in r.text and "RuntimeError" not in r.text
    assert error["message"].startswith("internal error (error id ") and len(error["error_id"]) == 16
    assert error["error_id"] in error["message"]
    logged = [rec for rec in caplog.records if error["error_id"] in rec.getMessage()]
    assert logged and "boom: not an ApiError" in (logged[0].exc_text or "")


# -- the OpenAPI document ------------------------------------------------------------------------------------
def test_openapi_documents_the_error_model_on_every_route(client):
    doc = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(doc)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["responses"]["503"]["content"]["application/json"]["schema"] == ref, (method, path)
            if path not in ("/healthz", "/readyz"):
                assert {"400", "401", "413"} <= set(op["responses"]) and op["security"], (method, path)
                assert "Retry-After" not in op["responses"]["401"].get("headers", {})
    paths = doc["paths"]
    assert "202" in paths["/v1/deliberations"]["post"]["responses"]
    assert {"201", "403", "409", "422"} <= set(paths["/v1/councils/{role}"]["put"]["responses"])
    assert "Retry-After" in paths["/v1/chat/completions"]["post"]["responses"]["429"]["headers"]


# -- the error body --------------------------------------------------------------------------------------
def test_error_bodies_are_always_encodable_json():
    body = error_body(422, "role '\ud800' is invalid", [{"input": math.nan, "loc": ["body", "\udfff"], "ctx": {"e": ValueError("x")}}])
    text = json.dumps(body, ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")
    assert "\ufffd" in body["error"]["message"] and body["error"]["detail"][0]["input"] == "nan"
