"""Helpers of the fault tests (test_fault_tolerance.py, test_chaos.py): the processes of a test cluster to
SIGKILL, and following deliberations over HTTP through the kills."""

from __future__ import annotations

import asyncio

from tests.ray_cluster import connect, wait_until

INGRESS_CLASS = "ServeReplica:councils:Ingress"  # the Serve replica actor's class name in Ray's state API


def actor(cluster, name: str):
    """The one ALIVE actor of that name (asserts there is exactly one)."""
    from ray.util.state import list_actors

    alive = list_actors(address=cluster.head.gcs_address,
                        filters=[("name", "=", name), ("state", "=", "ALIVE")], limit=100)
    assert len(alive) <= 1, f"duplicate {name} actors: {alive}"
    return alive[0] if alive else None


def ingress_replicas(cluster) -> list:
    """The ALIVE Serve replicas of the ingress (the processes that answer HTTP routes)."""
    from ray.util.state import list_actors

    return list_actors(address=cluster.head.gcs_address,
                       filters=[("class_name", "=", INGRESS_CLASS), ("state", "=", "ALIVE")], limit=100)


def head_process(cluster, name: str):
    """A process of the test cluster's head (gcs_server, raylet), found by the launcher's owner marker."""
    from councils_local.processes import owned_processes

    for p in owned_processes(cluster.head.proc.pid, cluster.head.marker):
        try:
            if p.name() == name:
                return p
        except Exception:
            continue
    raise AssertionError(f"no {name} process in the test cluster")


def connect_when_up(cluster) -> None:
    wait_until(lambda: cluster.head.alive() and connect(cluster) is None, 120, interval=0.5, what="driver reconnect")


def start(http, role="DEV", rounds=3, **extra) -> str:
    r = http.post("/v1/deliberations", json={"role": role, "task": f"Design a cache for {role}.", "rounds": rounds,
                                              **extra})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def finished(http, delib_id: str, timeout_s: float = 180) -> dict:
    return wait_until(lambda: (x := http.get(f"/v1/deliberations/{delib_id}").json())["status"]
                      in ("completed", "failed", "timeout") and x, timeout_s, what=f"deliberation {delib_id}")


def stage_reached(http, delib_id: str, stage: str) -> dict:
    return wait_until(lambda: stage in (x := http.get(f"/v1/deliberations/{delib_id}").json())["stages_done"] and x,
                      60, interval=0.05, what=f"{stage} of {delib_id}")


def proposal_events(cluster, delib_id: str) -> list[dict]:
    from actors.store import Store

    async def read():
        store = Store(cluster.valkey.url, "councils:")
        try:
            return [d for _, kind, d in await store.read_events(delib_id, count=10_000) if kind == "proposal"]
        finally:
            await store.close()

    return asyncio.run(read())
