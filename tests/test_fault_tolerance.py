"""Fault tolerance on a real local Ray cluster whose GCS is backed by a real Valkey.

Nothing a client was promised is lost when a council, an engine, Valkey or the Ray head dies.
The deterministic test engine is slowed down so that kills land in the middle of deliberations.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray

from tests.faults import (actor, connect_when_up, finished, head_process, ingress_replicas, proposal_events, stage_reached,
                          start)
from tests.ray_cluster import ROLES, connect, running_cluster, start_fake_engine, wait_until

pytestmark = pytest.mark.ray

STAGE_DELAY_S = 0.6  # per engine call; a 3-round deliberation runs 7 stages ≈ 4 s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("ft"), engine_delay_s=STAGE_DELAY_S, supervise=True) as c:
        yield c


def test_sigkill_council_mid_deliberation_resumes_from_checkpoint(cluster, http):
    delib_id = start(http)
    after_propose = stage_reached(http, delib_id, "propose")
    victim = actor(cluster, "council-DEV")
    os.kill(victim.pid, signal.SIGKILL)
    rec = finished(http, delib_id)
    assert rec["status"] == "completed", rec["error"]
    assert actor(cluster, "council-DEV").pid != victim.pid  # it really restarted
    # The propose stage ran once: its three proposals are the ones the deliberation went on with.
    proposals = proposal_events(cluster, delib_id)
    assert len(proposals) == 3
    assert {p["author"]: p["content"] for p in proposals} == {
        p["author"]: p["content"] for p in after_propose["proposals"]}
    assert rec["stages_done"][0] == "propose" and rec["stages_done"][-1] == "score"
    assert len(rec["result"]["proposals"]) == 3


def test_engine_killed_during_deliberation_completes_after_restart(cluster, http):
    delib_id = start(http, role="QA")
    stage_reached(http, delib_id, "propose")
    victim = actor(cluster, "engine-fake")
    os.kill(victim.pid, signal.SIGKILL)
    rec = finished(http, delib_id)
    assert rec["status"] == "completed", rec["error"]
    assert actor(cluster, "engine-fake").pid != victim.pid


def test_engine_down_past_deadline_fails_cleanly(cluster, http):
    """An engine that stays away: the council waits within the request's deadline, then says why."""
    ray.kill(ray.get_actor("engine-fake", namespace="councils"), no_restart=True)
    try:
        delib_id = start(http, role="DATA", rounds=0, constraints={"timeout_s": 4})
        rec = finished(http, delib_id, 60)
        assert rec["status"] in ("timeout", "failed")
        assert rec["error"]
        r = http.post("/v1/deliberations", params={"wait": "true"},
                      json={"role": "DATA", "task": "x", "rounds": 0, "constraints": {"timeout_s": 3}})
        assert r.status_code in (503, 504) and r.json()["status"] in ("timeout", "failed")
    finally:
        start_fake_engine(STAGE_DELAY_S)


def test_valkey_killed_and_restarted_from_aof_loses_nothing(cluster, http):
    """SIGKILL of Valkey with a deliberation in flight: every acknowledged write is there after the restart
    from the AOF (no sleep before the kill: appendfsync always), and the deliberation completes."""
    done = finished(http, start(http, role="ARCHITECT", rounds=0))
    councils = http.get("/v1/councils").json()
    head_restarts = cluster.supervisor.restarts["head"]
    in_flight = start(http, role="ARCHITECT", rounds=3)
    stage_reached(http, in_flight, "propose")
    acknowledged = proposal_events(cluster, in_flight)
    cluster.valkey.kill()
    # The supervisor restarts Valkey; Ray's GCS exits on the outage, so the supervisor restarts the head too.
    wait_until(lambda: cluster.supervisor.restarts["valkey"] >= 1, 30, what="Valkey restarted")
    try:
        wait_until(lambda: cluster.supervisor.restarts["head"] > head_restarts, 30, what="head restarted")
    except TimeoutError:
        pass  # the GCS rode it out: fine too
    ray.shutdown()
    connect_when_up(cluster)
    wait_until(lambda: cluster.client().get("/readyz").status_code == 200, 300, interval=0.25,
               what="ready after Valkey restart")
    assert http.get("/v1/councils").json() == councils
    assert http.get(f"/v1/deliberations/{done['id']}").json()["result"] == done["result"]
    assert {e["name"] for e in _engines(cluster)} == {"fake"}
    assert proposal_events(cluster, in_flight)[:len(acknowledged)] == acknowledged
    rec = finished(http, in_flight, 300)
    assert rec["status"] == "completed", rec["error"]
    again = http.post("/v1/deliberations", params={"wait": "true"}, json={"role": "DEV", "task": "t", "rounds": 0})
    assert again.status_code == 200, again.text


def _engines(cluster):
    import asyncio

    from actors.store import Store

    async def read():
        store = Store(cluster.valkey.url, "councils:")
        try:
            return [e.model_dump() for e in await store.list_engines()]
        finally:
            await store.close()

    return asyncio.run(read())


def restart_head_and_wait(cluster) -> float:
    t0 = time.time()
    ray.shutdown()
    cluster.restart_head()
    connect(cluster)
    wait_until(lambda: cluster.client().get("/readyz").status_code == 200, 300, interval=0.25, what="ready after restart")
    return time.time() - t0


def test_head_restart_restores_actors_app_and_records(cluster, http):
    done = finished(http, start(http, role="DEVOPS", rounds=0))
    councils = http.get("/v1/councils").json()
    in_flight = start(http, role="DEVOPS", rounds=2)
    restart_head_and_wait(cluster)
    with cluster.client() as http2:
        for role in ROLES:
            assert actor(cluster, f"council-{role}") is not None
        assert actor(cluster, "engine-fake") is not None
        assert http2.get("/v1/councils").json() == councils
        assert http2.get(f"/v1/deliberations/{done['id']}").json()["result"] == done["result"]
        rec = finished(http2, in_flight, 300)
        assert rec["status"] == "completed", rec["error"]  # resumed, not failed
        r = http2.post("/v1/deliberations", params={"wait": "true"}, json={"role": "DEV", "task": "t", "rounds": 0})
        assert r.status_code == 200 and r.json()["status"] == "completed"


def test_gcs_sigkilled_alone_is_restarted_by_the_supervisor_and_in_flight_work_completes(cluster, http):
    """Not a graceful stop: SIGKILL of the GCS process only. `ray start --block` notices, the supervisor
    restarts the head, GCS fault tolerance brings the actors back, the deliberation resumes and completes."""
    councils = http.get("/v1/councils").json()
    in_flight = start(http, role="QA", rounds=3)
    stage_reached(http, in_flight, "propose")
    restarts = cluster.supervisor.restarts["head"]
    gcs = head_process(cluster, "gcs_server")
    os.kill(gcs.pid, signal.SIGKILL)
    wait_until(lambda: cluster.supervisor.restarts["head"] > restarts, 120, what="the supervisor restarted the head")
    ray.shutdown()
    connect_when_up(cluster)
    wait_until(lambda: cluster.client().get("/readyz").status_code == 200, 300, interval=0.25,
               what="ready after the GCS kill")
    assert head_process(cluster, "gcs_server").pid != gcs.pid
    with cluster.client() as http2:
        rec = finished(http2, in_flight, 300)
        assert rec["status"] == "completed", rec["error"]
        assert http2.get("/v1/councils").json() == councils
        for role in ROLES:
            assert actor(cluster, f"council-{role}") is not None


def test_ingress_replica_sigkilled_serve_restarts_it_and_in_flight_work_completes(cluster, http):
    """SIGKILL of the Serve replica process that answers HTTP: Serve starts a new one, the next request succeeds,
    and a deliberation in flight (it runs in its council actor, not in the ingress) still completes."""
    in_flight = start(http, role="DEV", rounds=3)
    stage_reached(http, in_flight, "propose")
    [victim] = ingress_replicas(cluster)
    os.kill(victim.pid, signal.SIGKILL)
    t0 = time.time()
    wait_until(lambda: [r.pid for r in ingress_replicas(cluster)] not in ([], [victim.pid]), 120,
               what="a new ingress replica")
    r = wait_until(lambda: (x := http.post("/v1/deliberations", params={"wait": "true"},
                                           json={"role": "QA", "task": "t", "rounds": 0})).status_code == 200 and x,
                   120, interval=0.5, what="a deliberation after the ingress kill")
    print(f"ingress replica SIGKILL: next deliberation succeeded {time.time() - t0:.1f}s after the kill")
    assert r.json()["status"] == "completed"
    rec = finished(http, in_flight)
    assert rec["status"] == "completed", rec["error"]
    assert rec["stages_done"].count("propose") == 1


def test_three_head_restarts_keep_everything_without_duplicates(cluster, http):
    done = finished(http, start(http, role="DATA", rounds=0))
    councils = http.get("/v1/councils").json()
    for _ in range(3):
        restart_head_and_wait(cluster)
    with cluster.client() as http2:
        assert http2.get("/v1/councils").json() == councils
        assert http2.get(f"/v1/deliberations/{done['id']}").json()["result"] == done["result"]
        for role in ROLES:
            assert actor(cluster, f"council-{role}") is not None  # exactly one ALIVE each
        r = http2.post("/v1/deliberations", params={"wait": "true"}, json={"role": "QA", "task": "t", "rounds": 0})
        assert r.status_code == 200 and r.json()["status"] == "completed"
