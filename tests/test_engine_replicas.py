"""Engine replicas across nodes (issue 13, docs/topology.md): an engine with `replicas: 2` runs one actor on each of
two worker nodes; concurrent deliberations spread over both, each deliberation's calls stay on one replica, and
when one replica's node is SIGKILLed mid-run every deliberation still completes on the other.

The cluster: a head that offers the councils and verification resources but not the engine one, and two worker
nodes (raylets on this machine) that offer only `councils_engine` plus a marker of their own, which pins each
replica to its node. The engine is the deterministic test engine under the replicas' actor names.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from actors import topology
from actors.engine_hosting import replica_actor_names
from councils_local.processes import owned_processes, wait_for
from tests.ray_cluster import LocalCluster, ROLES, connect, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STAGE_DELAY_S = 0.8  # per engine call: 4 deliberations are in flight when the node dies
NODES = ("replica_node_a", "replica_node_b")
ACTORS = replica_actor_names("engine-fake", 2)


def start_replicas() -> dict:
    """The test engine under each replica's actor name, replica i on node NODES[i] (nothing else offers it)."""
    import ray

    from tests.fake_engine import FakeEngine

    return {name: ray.remote(FakeEngine).options(
        name=name, namespace="councils", lifetime="detached", max_restarts=-1, max_task_retries=0,
        max_concurrency=64, num_cpus=0, get_if_exists=True,
        resources={**topology.demand(topology.ENGINE), node: 0.001},
    ).remote({"name": "fake"}, STAGE_DELAY_S) for name, node in zip(ACTORS, NODES)}


def deploy(cluster: LocalCluster) -> None:
    from ray import serve

    from actors.models.config import AppConfig
    from serve_app.builder import build_app

    config = AppConfig.model_validate({
        "valkey_url": cluster.valkey.url,
        "engines": [{"name": "fake", "model": "test-engine", "replicas": 2}],
        "default_councils": {"engine": "fake", "agents_per_council": 3, "rounds": 1, "drafts_per_agent": 1,
                             "max_tokens": 32},
    })
    serve.start(http_options={"host": "127.0.0.1", "port": cluster.http_port})
    serve.run(build_app(config), name="councils", route_prefix="/")
    cluster.wait_ready()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    c = LocalCluster(tmp_path_factory.mktemp("replicas"),
                     head_resources=topology.node_resources(topology.WORKER, topology.VERIFIER))
    try:
        c.start()
        connect(c)
        for i, node in enumerate(NODES, start=2):  # one at a time: each joins before the next starts
            c.add_worker(node, {topology.ENGINE: topology.CAPACITY, node: 1})
            wait_for(lambda: len([n for n in ray.nodes() if n["Alive"]]) == i, 180, f"worker node {node}")
        c.engines = start_replicas()
        deploy(c)
        yield c
    finally:
        ray.shutdown()
        c.stop()


def test_four_deliberations_spread_over_two_replicas_and_survive_one_node_sigkill(cluster):
    import ray

    http = httpx.Client(base_url=cluster.url, timeout=60)
    nodes = {name: ray.get(h.health.remote())["node_id"] for name, h in cluster.engines.items()}
    assert len(set(nodes.values())) == 2  # one replica per worker node
    status = http.get("/v1/status").json()
    assert [r["actor"] for r in status["engine_replicas"]["fake"]] == ACTORS
    assert all(r["alive"] for r in status["engine_replicas"]["fake"])

    ids = []
    for i, role in enumerate(ROLES[:4]):
        r = http.post("/v1/deliberations", json={"role": role, "task": f"Write a function number {i}."})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    # Spread: both replicas serve calls while the four run.
    wait_until(lambda: all(ray.get(h.health.remote())["calls"] > 0 for h in cluster.engines.values()), 60,
               interval=0.2, what="calls on both replicas")
    assert all(http.get(f"/v1/deliberations/{i}").json()["status"] in ("queued", "in_progress") for i in ids)

    # SIGKILL every process of node b: its raylet, its workers, the replica on it.
    victim = cluster.workers[1]
    procs = owned_processes(victim.proc.pid, marker=victim.marker)
    assert any(p.name() == "raylet" for p in procs)
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed_at = time.time()

    def finished():
        recs = [http.get(f"/v1/deliberations/{i}").json() for i in ids]
        return all(r["status"] in ("completed", "failed", "timeout") for r in recs) and recs

    recs = wait_until(finished, 240, interval=0.25, what="the four deliberations")
    assert [r["status"] for r in recs] == ["completed"] * 4, [(r["status"], r.get("error")) for r in recs]
    survivor = cluster.engines[ACTORS[0]]
    assert ray.get(survivor.health.remote())["node_id"] == nodes[ACTORS[0]]  # the same actor, on its node
    replicas = http.get("/v1/status").json()["engine_replicas"]["fake"]
    assert replicas[0]["alive"] and not replicas[1]["alive"], replicas  # the dead node's replica shows as down
    print(f"four deliberations completed {time.time() - killed_at:.1f}s after node b's SIGKILL")
