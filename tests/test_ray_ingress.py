"""Actors and ingress on a real local Ray cluster (Valkey-backed GCS), with the deterministic test engine.

One cluster for the module: the ingress is deployed once and every test talks HTTP to it.
"""

from __future__ import annotations

import pytest
import ray

from tests.ray_cluster import ROLES, running_cluster, wait_until

pytestmark = pytest.mark.ray

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def test_default_councils_created_with_three_agents(http):
    body = http.get("/v1/councils").json()
    assert sorted(c["role"] for c in body["councils"]) == sorted(ROLES)
    assert all(len(c["agents"]) == 3 for c in body["councils"])
    assert http.get("/v1/councils/DEV").json()["agents"][0]["id"] == "agent-dev-001"


def test_council_and_engine_actors_are_detached_named_and_alive(cluster):
    from ray.util.state import list_actors

    actors = {a.name: a for a in list_actors(address=cluster.head.gcs_address, filters=[("state", "=", "ALIVE")],
                                             limit=1000)}
    for role in ROLES:
        assert f"council-{role}" in actors
        assert actors[f"council-{role}"].ray_namespace == "councils"
    assert "engine-fake" in actors
    assert ray.get_actor("council-DEV", namespace="councils")


def test_deliberation_wait_returns_ranked_result(http):
    r = http.post("/v1/deliberations", params={"wait": "true"},
                  json={"role": "DEV", "task": "Write a function that reverses a list.",
                        "constraints": {"requirements": ["reverse the list"]}})
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["status"] == "completed"
    res = rec["result"]
    assert [p["rank"] for p in res["proposals"]] == [1, 2, 3]
    assert res["winner_id"] == res["proposals"][0]["author"]
    from actors.scoring import all_verified, verifier_key
    from actors.models.records import Proposal
    from tests.fakes import drafted

    drafts = http.get("/v1/councils/DEV").json()["drafts_per_agent"]
    for p in res["proposals"]:
        assert p["content"] and p["checks"]
        assert 0 <= p["score"] <= 1
        # No tests: every agent writes all its drafts at once. A proposal whose best draft passed every
        # verifier is left alone; the others were critiqued and revised once.
        best = drafted(p)
        assert len(best.versions) == drafts
        assert len(p["versions"]) == drafts + (0 if all_verified([best]) else 1)
    assert any(len(p["versions"]) == drafts + 1 for p in res["proposals"])
    # Ranked by the decision rule: no proposal verifies better than one ranked above it.
    keys = [verifier_key(Proposal.model_validate(p).current) for p in res["proposals"]]
    assert keys == sorted(keys, reverse=True)
    # The peers rank only when the verifiers leave a tie (scoring.peer_rank: when_undecided); either way
    # the stage is accounted for, done with every agent's ranking or skipped with none.
    ranked = "rank" in rec["stages_done"]
    assert ranked != ("rank" in rec["stages_skipped"])
    # In the rank stage, two tied behaviour groups (of two proposals, or drafts of one) are judged on their
    # distinguishing inputs first; the peers rank only if proposals still tie, every one of them.
    assert len(res["rankings"]) in (0, 3) and (ranked or res["decided_by"] != "peer_rank")
    assert ranked == bool(res["rankings"] or res["judgements"])  # a stage that ran judged or ranked; a skipped one neither
    assert res["decided_by"] and res["reason"]
    assert res["duration_s"] > 0 and res["usage"]["completion_tokens"] > 0
    assert rec["stages_done"] == ["propose", "critique-1", "revise-1", *(["rank"] if ranked else []), "score"]
    # The stored record is the same one.
    stored = http.get(f"/v1/deliberations/{rec['id']}").json()
    assert stored["result"] == res and stored["progress"]["stages_done"] == len(rec["stages_done"])


def test_async_deliberation_202_then_poll(http):
    r = http.post("/v1/deliberations", json={"role": "QA", "task": "Plan tests for a login form.", "rounds": 0})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "pending" and body["status_url"] == f"/v1/deliberations/{body['id']}"
    rec = wait_until(lambda: (x := http.get(body["status_url"]).json())["status"] == "completed" and x,
                     what="async deliberation")
    # Peer ranking runs only where the verifiers leave a tie: here the one draft whose code runs decides.
    assert rec["stages_done"] in (["propose", "rank", "score"], ["propose", "score"])
    assert "rank" in rec["stages_done"] + rec["stages_skipped"]


@pytest.mark.parametrize("payload,status,needle", [
    ({"role": "NOPE", "task": "x"}, 404, "NOPE"),
    ({"role": "dev; rm", "task": "x"}, 422, "role"),
    ({"role": "DEV", "task": ""}, 422, "task"),
    ({"role": "DEV", "task": "   "}, 422, "task"),
    ({"role": "DEV", "task": "x" * 9000}, 422, "task"),
    ({"role": "DEV", "task": "x", "num_agents": 0}, 422, "num_agents"),
    ({"role": "DEV", "task": "x", "num_agents": 5}, 422, "num_agents"),
    ({"role": "DEV", "task": "x", "rounds": 9}, 422, "rounds"),
    ({"role": "DEV", "task": "x", "bogus": 1}, 422, "bogus"),
    ({"task": "x"}, 422, "role"),
])
def test_bad_deliberation_requests(http, payload, status, needle):
    r = http.post("/v1/deliberations", json=payload)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_malformed_and_oversized_bodies(http):
    r = http.post("/v1/deliberations", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    r = http.post("/v1/deliberations", content=b"x" * 300_000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert http.get("/v1/deliberations/ffff").status_code == 404
    assert http.get("/v1/deliberations/" + "0" * 32).status_code == 404
    assert http.get("/v1/councils/lower").status_code == 422


def test_put_council_create_replace_and_agents(http, cluster):
    agents = [{"id": "sec-1", "engine": "fake", "persona": "pragmatic security engineer"},
              {"id": "sec-2", "engine": "fake", "persona": "meticulous auditor"}]
    r = http.put("/v1/councils/SEC", json={"agents": agents, "rounds": 1})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["version"] == 1
    r = http.put("/v1/councils/SEC", json={"agents": agents[:1], "rounds": 0})
    assert r.status_code == 200
    assert r.json()["version"] == 2 and r.json()["created_at"] == created["created_at"]
    # Unknown engine: refused, nothing written.
    r = http.put("/v1/councils/SEC", json={"agents": [{"id": "x", "engine": "ghost"}]})
    assert r.status_code == 422 and "ghost" in r.json()["error"]["message"]
    assert http.get("/v1/councils/SEC").json()["version"] == 2
    # What GET returns can be PUT back (read-only fields ignored); a body naming another role is refused.
    got = http.get("/v1/councils/SEC").json()
    r = http.put("/v1/councils/SEC", json=got)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3 and r.json()["created_at"] == created["created_at"]
    r = http.put("/v1/councils/SEC", json={**got, "role": "QA"})
    assert r.status_code == 422 and "body.role" in r.json()["error"]["message"]
    assert http.get("/v1/councils/SEC").json()["version"] == 3
    # Agents.
    r = http.post("/v1/councils/SEC/agents", json={"id": "sec-3", "engine": "fake"})
    assert r.status_code == 201 and len(r.json()["agents"]) == 2
    assert http.post("/v1/councils/SEC/agents", json={"id": "sec-3", "engine": "fake"}).status_code == 409
    assert http.delete("/v1/councils/SEC/agents/nobody").status_code == 404
    assert http.delete("/v1/councils/SEC/agents/sec-3").status_code == 200
    assert http.delete("/v1/councils/SEC/agents/sec-1").status_code == 409  # the last one
    # The new council deliberates with its (reloaded) spec.
    r = http.post("/v1/deliberations", params={"wait": "true"}, json={"role": "SEC", "task": "Review a login."})
    assert r.status_code == 200 and len(r.json()["result"]["proposals"]) == 1
    # Delete: gone from Valkey and from Ray.
    assert http.delete("/v1/councils/SEC").status_code == 200
    assert http.get("/v1/councils/SEC").status_code == 404
    assert http.delete("/v1/councils/SEC").status_code == 404
    wait_until(lambda: _actor_gone("council-SEC"), 30, what="council-SEC gone")


def _actor_gone(name: str) -> bool:
    try:
        ray.get_actor(name, namespace="councils")
        return False
    except ValueError:
        return True


def test_status_reports_councils_and_latency(http):
    http.post("/v1/deliberations", params={"wait": "true"}, json={"role": "DATA", "task": "Design a schema."})
    s = http.get("/v1/status").json()
    assert s["ready"] and s["uptime_s"] > 0
    assert {c["role"] for c in s["councils"]} >= set(ROLES)
    assert s["counters"]["deliberations.DATA.completed"] >= 1
    assert s["latency_s"]["DATA"]["count"] >= 1 and s["latency_s"]["DATA"]["p50"] > 0


def test_council_actor_restart_is_a_restore(http):
    """Kill council-DEV (it restarts): its spec comes back from Valkey and it deliberates again."""
    before = http.get("/v1/councils/DEV").json()
    ray.kill(ray.get_actor("council-DEV", namespace="councils"), no_restart=False)
    r = http.post("/v1/deliberations", params={"wait": "true"}, json={"role": "DEV", "task": "Sort a list."})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    assert http.get("/v1/councils/DEV").json() == before
