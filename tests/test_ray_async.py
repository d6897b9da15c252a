"""Asynchronous and streamed deliberations, orchestration, events and status on a real local Ray cluster.

One cluster for the module (the deterministic engine answers after a short delay, so a deliberation's
events arrive over time); every test talks HTTP to the ingress, or reads Valkey directly.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from httpx_sse import connect_sse

from actors.models.records import DeliberationRecord
from actors.models.requests import Constraints, DeliberationRequest
from actors.store import Store
from tests.fakes import UNPARSEABLE_ARCHITECT
from tests.ray_cluster import ROLES, running_cluster, wait_until

pytestmark = pytest.mark.ray

ENGINE_DELAY_S = 0.2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("cluster"), engine_delay_s=ENGINE_DELAY_S) as c:
        yield c


def feed(kv) -> list[tuple[str, dict]]:
    return [(f["kind"], json.loads(f["data"])) for _, f in kv.xrange("councils:events")]


def stage_events(kv, delib_id: str) -> list[tuple[str, dict]]:
    return [(f["kind"], json.loads(f["data"])) for _, f in kv.xrange(f"councils:delib:{delib_id}:events")]


def read_sse(client: httpx.Client, url: str, *, headers=None, params=None, stop_after: int | None = None):
    """(status, events) of one SSE connection, read with httpx-sse, closed after stop_after events or when the
    server ends it; each event {"id", "event", "data"} (the `retry:` message and comments are not events)."""
    events = []
    with connect_sse(client, "GET", url, headers=dict(headers or {}), params=params) as source:
        r = source.response
        if r.status_code != 200:
            r.read()
            return r.status_code, r.json()
        assert r.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            if not sse.data:
                continue
            events.append({"id": sse.id, "event": sse.event, "data": sse.json()})
            if stop_after is not None and len(events) >= stop_after:
                return 200, events
    return 200, events


def expected_kinds(record: dict) -> list[str]:
    """The stage events of a finished record of one round: a proposal that passed every verifier at once
    is not critiqued or revised (the fake engine's answers differ by persona), so the critique and
    revision events are as many as the revisions in the record."""
    from actors.models.requests import Constraints
    from actors.scoring import answer_is_code

    proposals = record["result"]["proposals"]
    agents, revised = len(proposals), sum(len(p["versions"]) - 1 for p in proposals)
    # A code task without tests: the test writer's asserts come first (every council here has several agents).
    writer = ["tests.generated"] if answer_is_code(record["request"]["role"],
                                                   Constraints.model_validate(record["request"]["constraints"])) else []
    # The rank stage: judgements of two tied behaviour groups' distinguishing inputs first, if any, then the peers'
    # rankings unless the judgements decided.
    judged = ["judgement"] * len(record["result"]["judgements"])
    ranked = 0 if agents < 3 or record["result"]["decided_by"] == "distinguishing_inputs" else agents
    assert len(record["result"]["rankings"]) == ranked, record["result"]["reason"]
    kinds = []
    for item, count in (("proposal", agents), ("critique", revised), ("revision", revised),
                        ("ranking", len(record["result"]["rankings"])), ("score", agents)):
        extra = writer if item == "proposal" else judged if item == "ranking" else []
        kinds += ["stage.started"] + extra + [item] * count + ["stage.completed"]
    return kinds + ["completed"]


def test_twenty_concurrent_async_deliberations_across_the_five_councils(http, kv):
    before = http.get("/v1/status").json()["counters"]
    jobs = [(ROLES[i % len(ROLES)], f"Task {i}: write function number {i} that reverses a list.", f"T-{i}")
            for i in range(20)]

    def post(job):
        role, task, task_id = job
        with httpx.Client(base_url=http.base_url, timeout=60) as c:
            return c.post("/v1/deliberations", json={
                "role": role, "task": task,
                "constraints": {"requirements": ["reverse the list"], "metadata": {"task_id": task_id}}})

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, jobs))
    assert [r.status_code for r in responses] == [202] * 20
    accepted = [r.json() for r in responses]
    ids = [a["id"] for a in accepted]
    assert len(set(ids)) == 20
    for a in accepted:
        assert a["status"] == "pending" and a["status_url"] == f"/v1/deliberations/{a['id']}"
        assert a["events_url"] == f"/v1/deliberations/{a['id']}/events"

    def all_done():
        records = [http.get(f"/v1/deliberations/{i}").json() for i in ids]
        return records if all(r["status"] == "completed" for r in records) else None

    records = wait_until(all_done, 120, 1.0, what="20 deliberations completed")
    winners = set()
    for (role, task, task_id), rec in zip(jobs, records):
        assert rec["request"]["role"] == role and rec["request"]["task"] == task
        assert rec["progress"] == {"stages_done": 5, "stages_total": 5, "last_stage": "score"}
        result = rec["result"]
        assert [p["rank"] for p in result["proposals"]] == [1, 2, 3]
        winners.add(result["proposals"][0]["content"])
        # Every stage event once, in order, one terminal event.
        assert [k for k, _ in stage_events(kv, rec["id"])] == expected_kinds(rec)
    assert len(winners) == 20  # distinct tasks, distinct results: nothing crossed over

    # The feed: one deliberation.completed per deliberation, with its fields.
    by_id = {}
    wait_until(lambda: sum(1 for _, d in feed(kv) if d["id"] in ids) == 20, 30, what="20 feed events")
    for kind, data in feed(kv):
        if data["id"] in ids:
            assert data["id"] not in by_id, "duplicate completion event"
            by_id[data["id"]] = (kind, data)
    for (role, _task, task_id), rec in zip(jobs, records):
        kind, data = by_id[rec["id"]]
        assert kind == "deliberation.completed"
        assert data["role"] == role and data["task_id"] == task_id and data["status"] == "completed"
        assert data["winner_id"] == rec["result"]["winner_id"]
        assert data["score"] == rec["result"]["proposals"][0]["score"]
        assert data["duration_s"] > 0 and data["usage"]["total_tokens"] > 0 and data["time"] > 0

    after = http.get("/v1/status").json()["counters"]
    for role in ROLES:
        assert after[f"accepted.{role}"] - before.get(f"accepted.{role}", 0) == 4
        assert after[f"deliberations.{role}.completed"] - before.get(f"deliberations.{role}.completed", 0) == 4


def test_sse_streams_every_stage_event_in_order_and_resumes_exactly(http):
    r = http.post("/v1/deliberations", json={"role": "DEV", "task": "Write a stack class.", "rounds": 1})
    assert r.status_code == 202
    events_url = r.json()["events_url"]
    # Live: read the first events as they happen, then drop the connection.
    status, first = read_sse(http, events_url, stop_after=6)
    assert status == 200 and [e["event"] for e in first] == (["stage.started", "tests.generated"] + ["proposal"] * 3
                                                             + ["stage.completed"])
    # Reconnect with Last-Event-ID: the rest, exactly once, ending with the terminal event.
    status, rest = read_sse(http, events_url, headers={"Last-Event-ID": first[-1]["id"]})
    assert status == 200
    everything = first + rest
    record = http.get(r.json()["status_url"]).json()
    assert [e["event"] for e in everything] == expected_kinds(record)
    ids = [e["id"] for e in everything]
    assert len(set(ids)) == len(ids) and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert first[0]["data"] == {"stage": "propose"} and everything[-1]["data"]["status"] == "completed"
    # After the end: the whole history, then the close; the query parameter resumes too.
    assert read_sse(http, events_url)[1] == everything
    assert read_sse(http, events_url, params={"last_event_id": ids[10]})[1] == everything[11:]
    assert read_sse(http, events_url, headers={"Last-Event-ID": ids[-1]})[1] == []
    # Errors are JSON.
    assert read_sse(http, "/v1/deliberations/" + "0" * 32 + "/events")[0] == 404
    assert read_sse(http, "/v1/deliberations/nope/events")[0] == 404
    assert read_sse(http, events_url, headers={"Last-Event-ID": "bogus"})[0] == 422


def test_orchestrate_architect_choice_and_fallback(http):
    r = http.post("/v1/orchestrate", json={"role": "ARCHITECT", "task": "Design a URL shortener.", "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decided_by"] == "architect" and body["architect"]["parse_error"] is None
    assert body["reason"] == "candidate 2 is the most thorough"  # the fake architect picks the last one
    assert [c["rank"] for c in body["candidates"]] == [1, 2]
    assert body["chosen"] == {k: body["candidates"][1][k] for k in ("number", "author", "content", "score", "rank")}
    stored = http.get(body["status_url"]).json()
    assert stored["status"] == "completed" and stored["orchestration"]["chosen"]["author"] == body["chosen"]["author"]

    r = http.post("/v1/orchestrate", json={"role": "ARCHITECT", "task": f"Design a cache. {UNPARSEABLE_ARCHITECT}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decided_by"] == "fallback" and body["top_k"] == 3 and len(body["candidates"]) == 3
    assert body["architect"]["raw"].startswith("I would go with") and "not a JSON object" in body["architect"]["parse_error"]
    passing = [c for c in body["candidates"] if c["checks_passed"]]
    expected = passing[0] if passing else max(body["candidates"], key=lambda c: c["score"])
    assert body["chosen"]["number"] == expected["number"] and body["reason"]

    assert http.post("/v1/orchestrate", json={"role": "DEV", "task": "x", "top_k": 11}).status_code == 422
    assert http.post("/v1/orchestrate", json={"role": "NOPE", "task": "x"}).status_code == 404


def test_stuck_record_becomes_timeout_and_is_published(http, cluster, kv):
    """A record accepted in Valkey that no council was ever told about, past its deadline:
    the QA council's sweeper ends it as timeout."""
    record = DeliberationRecord(
        request=DeliberationRequest(role="QA", task="stuck", constraints=Constraints(timeout_s=1, metadata={"task_id": "S-1"})),
        created_at=time.time() - 10,
    )

    async def accept():
        store = Store(cluster.valkey.url, "councils:")
        try:
            await store.create_record(record)
        finally:
            await store.close()

    asyncio.run(accept())
    rec = wait_until(lambda: (x := http.get(f"/v1/deliberations/{record.id}").json())["status"] == "timeout" and x,
                     30, what="stuck record timed out")
    assert "deadline passed" in rec["error"]
    wait_until(lambda: any(d["id"] == record.id for _, d in feed(kv)), 10, what="timeout on the feed")
    [(kind, data)] = [(k, d) for k, d in feed(kv) if d["id"] == record.id]
    assert kind == "deliberation.failed" and data["status"] == "timeout" and data["task_id"] == "S-1"
    assert [e["event"] for e in read_sse(http, f"/v1/deliberations/{record.id}/events")[1]] == ["timeout"]


def test_status_reports_per_role_figures(http):
    s = http.get("/v1/status").json()
    assert s["uptime_s"] > 0 and s["ready"]
    council = next(c for c in s["councils"] if c["role"] == "DEV")
    assert council["agents"] == 3 and council["agent_ids"][0] == "agent-dev-001" and council["engines"] == ["fake"]
    dev = s["by_role"]["DEV"]
    assert dev["accepted"] >= 5 and dev["by_status"]["completed"] >= 5 and dev["active"] == 0
    assert dev["tokens"]["total"] == dev["tokens"]["prompt"] + dev["tokens"]["completion"] > 0
    assert dev["duration_s"]["count"] >= 5 and 0 < dev["duration_s"]["p50"] <= dev["duration_s"]["p95"] <= dev["duration_s"]["p99"]
    assert s["by_role"]["QA"]["by_status"]["timeout"] >= 1
    assert s["by_role"]["ARCHITECT"]["orchestrations"] == {"architect": 1, "fallback": 1}


def test_idempotency_key_retries_get_the_same_deliberation(http, kv):
    body = {"role": "QA", "task": "Write a test plan for a login form.", "constraints": {"metadata": {"n": 1}}}
    key = {"Idempotency-Key": f"client-retry-{time.time()}"}
    accepted_before = http.get("/v1/status").json()["counters"].get("accepted.QA", 0)
    first = http.post("/v1/deliberations", json=body, headers=key)
    assert first.status_code == 202, first.text
    delib_id = first.json()["id"]
    # A retry while it runs, and one after it finished, both name the first deliberation.
    again = http.post("/v1/deliberations", json=body, headers=key)
    assert again.status_code == 202 and again.json()["id"] == delib_id
    done = http.post("/v1/deliberations", params={"wait": "true"}, json=body, headers=key)
    assert done.status_code == 200 and done.json()["id"] == delib_id and done.json()["status"] == "completed"
    # Accepted and run once.
    assert http.get("/v1/status").json()["counters"]["accepted.QA"] - accepted_before == 1
    wait_until(lambda: any(d["id"] == delib_id for _, d in feed(kv)), 10, what="the feed event")
    assert [k for k, d in feed(kv) if d["id"] == delib_id] == ["deliberation.completed"]
    # The same key with another request is a conflict, and writes nothing; another council's key space is its own.
    other = http.post("/v1/deliberations", json={**body, "task": "Something else."}, headers=key)
    assert other.status_code == 409 and delib_id not in other.text  # never names another client's record
    dev = http.post("/v1/deliberations", json={**body, "role": "DEV"}, headers=key)
    assert dev.status_code == 202 and dev.json()["id"] != delib_id
    bad = http.post("/v1/deliberations", json=body, headers={"Idempotency-Key": "x" * 300})
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["error"]["message"]
