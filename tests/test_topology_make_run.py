"""The production topology under `make run` (issue 13, docs/topology.md), on the real vLLM CPU engine.

The launcher starts a head (GCS, dashboard, Serve controller; num-cpus 0, none of the councils_* resources) and
a worker node (a second raylet on this machine) that offers them: every council and engine actor, and the
ingress replica, run on the worker. SIGKILL of the head's GCS and raylet together, or of the GCS alone, with a
deliberation in flight: the worker's engine keeps its PID (no model reload), the deliberation ends `completed`, a
new one succeeds and every council is back. These tests bound no time (each wait allows minutes; the time they
take is printed); the seconds a recovery costs are measured in docs/benchmarks.md#8-time-to-recover.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from actors import topology
from councils_local.ray_nodes import HEAD_NICENESS
from tests.ray_cluster import wait_until
from tests.test_e2e_make_run import ROLES, _stop_shared, next_module_shares_it, shared_launcher

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def launcher(request, tmp_path_factory):
    """The `make run` this module shares with test_e2e_make_run.py, which runs right after it (conftest.py)."""
    yield shared_launcher(request, tmp_path_factory)
    if not next_module_shares_it(request):
        _stop_shared()


def client(launcher) -> httpx.Client:
    return httpx.Client(base_url=launcher.url, timeout=600,
                        headers={"Authorization": f"Bearer {launcher.api_token}"})


STATE = """
import json, ray
from ray.util.state import list_actors, list_nodes
ray.init(address={gcs!r}, log_to_driver=False)
nodes = [dict(node_id=n.node_id, is_head=n.is_head_node, resources=n.resources_total)
         for n in list_nodes(filters=[("state", "=", "ALIVE")], limit=100, raise_on_missing_output=False)]
actors = [dict(name=a.name, cls=a.class_name, node_id=a.node_id, pid=a.pid)
          for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000, raise_on_missing_output=False)]
print(json.dumps(dict(nodes=nodes, actors=actors)))
"""


def cluster_state(launcher) -> dict:
    """Alive nodes and actors, asked from a process with make run's Ray token (Ray reads the mode per process)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(launcher.data_dir / "ray-auth-token")}
    out = subprocess.run([sys.executable, "-c", STATE.format(gcs=launcher.gcs)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def on_cluster(launcher, cmd: list[str]) -> bool:
    """A raylet of this cluster: its --gcs-address (Ray writes the node's IP there, not 127.0.0.1) has our port."""
    return any(a.startswith("--gcs-address=") and a.endswith(f":{launcher.ports['ray']}") for a in cmd)


def head_processes(launcher) -> dict[str, psutil.Process]:
    """The head's gcs_server (its port) and raylet (`--head`), by their command lines."""
    found = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] == "gcs_server" and f"--gcs_server_port={launcher.ports['ray']}" in cmd:
            found["gcs_server"] = p
        elif p.info["name"] == "raylet" and "--head" in cmd and on_cluster(launcher, cmd):
            found["raylet"] = p
    return found


def test_head_runs_no_council_and_no_engine(launcher):
    state = cluster_state(launcher)
    heads = [n for n in state["nodes"] if n["is_head"]]
    workers = [n for n in state["nodes"] if not n["is_head"]]
    assert len(heads) == 1 and len(workers) == 1, state["nodes"]
    (head,), (worker,) = heads, workers
    assert head["resources"].get("CPU", 0) == 0
    assert not set(head["resources"]) & set(topology.ALL)
    assert all(worker["resources"].get(r) == topology.CAPACITY for r in topology.ALL), worker["resources"]
    where = {a["name"]: a["node_id"] for a in state["actors"] if a["name"]}
    ours = {n: node for n, node in where.items() if n.startswith(("council-", "engine-"))}
    assert {f"council-{r}" for r in ROLES} | {"engine-smollm2"} <= set(ours)
    assert set(ours.values()) == {worker["node_id"]}, ours
    assert where["SERVE_CONTROLLER_ACTOR"] == head["node_id"]
    ingress = [a for a in state["actors"] if a["cls"] and "Ingress" in a["cls"]]
    assert ingress and all(a["node_id"] == worker["node_id"] for a in ingress), ingress
    # The head yields the CPU to the worker node's actors (HEAD_NICENESS; Ray runs workers at niceness 15).
    head_daemons = head_processes(launcher)
    assert {n: p.nice() for n, p in head_daemons.items()} == {"gcs_server": HEAD_NICENESS, "raylet": HEAD_NICENESS}
    engine = next(a for a in state["actors"] if a["name"] == "engine-smollm2")
    controller = next(a for a in state["actors"] if a["name"] == "SERVE_CONTROLLER_ACTOR")
    assert psutil.Process(engine["pid"]).nice() < psutil.Process(controller["pid"]).nice()


def kill_head_mid_deliberation(launcher, which: set[str]) -> None:
    """SIGKILL the head processes named in `which` with a deliberation in flight; then the in-flight one
    ends `completed`, a new one succeeds, the head comes back, and the worker node's engine and councils
    are the same processes as before (no model reload, not one council restarted)."""
    http = client(launcher)
    before = cluster_state(launcher)
    engine = next(a for a in before["actors"] if a["name"] == "engine-smollm2")
    engine_proc = psutil.Process(engine["pid"])
    worker_raylets = [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "raylet"
                      and "--head" not in (p.info["cmdline"] or []) and on_cluster(launcher, p.info["cmdline"] or [])]
    assert len(worker_raylets) == 1
    r = http.post("/v1/deliberations", json={"role": "DEV", "task": "Write a Python function add(a, b).",
                                             "rounds": 1, "max_tokens": 48})
    assert r.status_code == 202, r.text
    in_flight = r.json()["id"]
    wait_until(lambda: http.get(f"/v1/deliberations/{in_flight}").json()["status"] == "in_progress", 120,
               interval=0.2, what="deliberation in progress")

    head = head_processes(launcher)
    assert set(head) == {"gcs_server", "raylet"}, head
    victims = {name: p for name, p in head.items() if name in which}
    log_offset = launcher.log.stat().st_size
    t0 = time.time()
    for p in victims.values():
        os.kill(p.pid, signal.SIGKILL)

    rec = wait_until(lambda: (x := http.get(f"/v1/deliberations/{in_flight}").json())["status"]
                     in ("completed", "failed", "timeout") and x, 600, interval=0.25, what="in-flight deliberation")
    assert rec["status"] == "completed", rec.get("error")
    first = wait_until(lambda: http.post("/v1/deliberations", params={"wait": "true"}, json={
        "role": "QA", "task": "Say hello.", "rounds": 0, "max_tokens": 16}).status_code == 200, 600, interval=1,
        what="a new deliberation")
    took = time.time() - t0
    print(f"head SIGKILL ({' + '.join(sorted(which))}) -> in-flight completed and a new deliberation: {took:.1f}s")
    assert first

    # The head came back (a new GCS, and a new raylet where it was killed: the supervisor restarts the whole
    # head), the worker and its actors never went away.
    wait_until(lambda: set(head_processes(launcher)) == {"gcs_server", "raylet"}, 120, what="head back")
    assert all(p.pid not in {v.pid for v in victims.values()} for p in head_processes(launcher).values())
    assert engine_proc.is_running() and worker_raylets[0].is_running()
    after = wait_until(lambda: (s := cluster_state(launcher)) and len(s["nodes"]) == 2 and s, 120,
                       what="two nodes again")
    engine_after = next(a for a in after["actors"] if a["name"] == "engine-smollm2")
    assert engine_after["pid"] == engine["pid"] and engine_after["node_id"] == engine["node_id"]
    councils_before = {a["name"]: a["pid"] for a in before["actors"] if (a["name"] or "").startswith("council-")}
    councils_after = {a["name"]: a["pid"] for a in after["actors"] if (a["name"] or "").startswith("council-")}
    assert councils_after == councils_before  # not one council restarted
    assert {c["role"] for c in http.get("/v1/councils").json()["councils"]} >= set(ROLES)  # every council is back
    assert "Ray head died" in launcher.log.read_bytes()[log_offset:].decode(errors="replace")


def test_head_gcs_and_raylet_sigkilled_mid_deliberation_the_worker_keeps_its_engine_and_councils(launcher):
    kill_head_mid_deliberation(launcher, {"gcs_server", "raylet"})


def test_gcs_alone_sigkilled_mid_deliberation_the_supervisor_restarts_the_head(launcher):
    """Only the GCS process dies: `ray start --block` notices, the launcher's supervisor restarts the head on
    the same port and GCS namespace, and the GCS reloads its tables from Valkey."""
    kill_head_mid_deliberation(launcher, {"gcs_server"})
