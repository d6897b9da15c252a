"""Operations on a real local cluster: `serve deploy` rollouts under load, live user_config, engine
rollover, metrics on Ray's metrics endpoint, and a config typo that fails the deploy clearly.

The configs are configs/local.yaml with the deterministic test engine in place of vLLM (the
`engine-fake` actor is created before the deploy; the registry's get-or-create finds it), deployed
with the real `serve deploy` CLI against the test cluster's dashboard.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import ray
import yaml

from actors.models.councils import EngineSpec
from councils_local.launch.readiness import serve_failures
from councils_local.processes import http_get
from serve_app.declarative import rolled_actor_name
from tests.fake_engine import FakeEngine
from tests.ray_cluster import ROLES, LocalCluster, running_cluster, wait_until

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENGINE_DELAY_S = 0.1
SEC = {"role": "SEC", "rounds": 1,
       "agents": [{"id": "sec-1", "engine": "fake", "persona": "security reviewer", "max_tokens": 32},
                  {"id": "sec-2", "engine": "fake", "persona": "auditor", "max_tokens": 32}]}
# The configs the tests deploy, in order (each test starts from what the one before deployed).
V2 = dict(councils=[SEC], user_config={"record_ttl_s": 900}, replicas=2)  # new council, user_config, replica
V3 = dict(V2, user_config={"record_ttl_s": 900, "default_timeout_s": 77,  # user_config only
                           "limits": {"max_task_chars": 200}})
NEW_ENGINE = {"name": "fake", "model": "test-engine", "max_num_seqs": 32}
V4 = dict(V3, engine=NEW_ENGINE)  # a changed engine spec


def serve_config(cluster: LocalCluster, *, councils=(), user_config=None, replicas=1, engine=None) -> dict:
    """configs/local.yaml, with the fake engine and the test cluster's HTTP port."""
    cfg = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    cfg["http_options"]["port"] = cluster.http_port
    app = cfg["applications"][0]
    app["args"]["engines"] = [engine or {"name": "fake", "model": "test-engine"}]
    # One draft per agent, as the other fake-engine suites (tests/ray_cluster.py).
    app["args"]["default_councils"].update(engine="fake", max_tokens=32, drafts_per_agent=1)
    app["args"]["councils"] = list(councils)
    deployment = app["deployments"][0]
    deployment["num_replicas"] = replicas
    deployment["user_config"] = {**deployment["user_config"], **(user_config or {})}
    return cfg


def serve_deploy(cluster: LocalCluster, cfg: dict, name: str) -> None:
    path = cluster.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    subprocess.run([str(BIN / "serve"), "deploy", str(path), "--address", cluster.head.dashboard_url],
                   check=True, capture_output=True, text=True, timeout=120)


def serve_status(cluster: LocalCluster) -> dict:
    out = subprocess.run([str(BIN / "serve"), "status", "--address", cluster.head.dashboard_url],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return yaml.safe_load(out)["applications"].get("councils", {})


def running_replicas(cluster: LocalCluster) -> int | None:
    app = serve_status(cluster)
    if app.get("status") != "RUNNING":
        return None
    return app["deployments"]["Ingress"]["replica_states"].get("RUNNING")


def list_alive(cluster: LocalCluster):
    from ray.util.state import list_actors

    return list_actors(address=cluster.head.gcs_address, filters=[("state", "=", "ALIVE")], limit=2000)


def alive_actors(cluster: LocalCluster) -> dict[str, str]:
    """name -> actor id of the live named actors."""
    return {a.name: a.actor_id for a in list_alive(cluster) if a.name}


def ingress_replicas(cluster: LocalCluster) -> set[str]:
    return {a.actor_id for a in list_alive(cluster) if a.class_name == "ServeReplica:councils:Ingress"}


class Load:
    """A bounded number of client threads, each posting wait=true deliberations back to back."""

    def __init__(self, url: str, roles: list[str], threads: int = 3):
        self.url, self.roles, self.threads = url, roles, threads
        self.stop = threading.Event()
        self.results: list[tuple[str, int, dict]] = []
        self.lock = threading.Lock()
        self.workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as http:
            n = 0
            while not self.stop.is_set():
                role = self.roles[(i + n) % len(self.roles)]
                n += 1
                try:
                    r = http.post("/v1/deliberations", params={"wait": "true"},
                                  json={"role": role, "task": f"Write a function number {n} for {role}."})
                    body = r.json()
                    code = r.status_code
                except Exception as exc:  # a dropped connection is a failed request too
                    code, body = 0, {"error": repr(exc)}
                with self.lock:
                    self.results.append((role, code, body))

    def __enter__(self) -> "Load":
        for w in self.workers:
            w.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for w in self.workers:
            w.join(180)

    def count(self) -> int:
        with self.lock:
            return len(self.results)

    def failures(self) -> list:
        return [(role, code, str(body)[:300]) for role, code, body in self.results
                if code != 200 or body.get("status") != "completed"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    def deploy_v1(c: LocalCluster) -> None:
        serve_deploy(c, serve_config(c), "v1")
        c.wait_ready()

    with running_cluster(tmp_path_factory.mktemp("cluster"), engine_delay_s=ENGINE_DELAY_S, deploy_app=deploy_v1) as c:
        yield c


def test_rollout_under_load_new_council_user_config_and_replica(cluster, http, kv):
    assert running_replicas(cluster) == 1
    before = alive_actors(cluster)
    councils_before = {f"council-{r}": before[f"council-{r}"] for r in ROLES}
    assert http.get("/v1/status").json()["settings"]["record_ttl_s"] == 3600

    changed = serve_config(cluster, **V2)
    with Load(cluster.url, ROLES) as load:
        wait_until(lambda: load.count() >= 3, 60, what="load running")
        started = load.count()
        serve_deploy(cluster, changed, "v2")
        wait_until(lambda: running_replicas(cluster) == 2, 180, interval=0.25, what="2 replicas of the new config")
        sec = wait_until(lambda: (r := http.post("/v1/deliberations", params={"wait": "true"},
                                                 json={"role": "SEC", "task": "Review a login form."}))
                         .status_code == 200 and r.json(), 60, what="the new council answers")
        during = load.count() - started
        time.sleep(3)  # and keep the load on the new replicas for a moment
    assert load.failures() == [], load.failures()
    assert during > 0 and load.count() >= started + during

    assert sec["status"] == "completed" and len(sec["result"]["proposals"]) == 2
    spec = http.get("/v1/councils/SEC").json()
    assert spec["version"] == 1  # two replicas applied the config: one create, no bump
    assert {c["role"]: c["version"] for c in http.get("/v1/councils").json()["councils"]} == {
        **{r: 1 for r in ROLES}, "SEC": 1}
    after = alive_actors(cluster)
    assert {name: after.get(name) for name in councils_before} == councils_before  # same actors
    assert "council-SEC" in after
    # user_config reached every replica, and the councils: a record finished now lives 900 s.
    for _ in range(6):
        assert http.get("/v1/status").json()["settings"]["record_ttl_s"] == 900
    r = http.post("/v1/deliberations", params={"wait": "true"}, json={"role": "QA", "task": "Plan tests."})
    assert r.status_code == 200
    assert 800 < kv.ttl(f"councils:delib:{r.json()['id']}") <= 900


def test_user_config_change_keeps_the_replicas(cluster, http):
    replicas = ingress_replicas(cluster)
    assert len(replicas) == 2
    long_task = {"role": "DEV", "task": "Sort a list. " * 25}  # 325 characters
    r = http.post("/v1/deliberations", json=long_task)
    assert r.status_code == 202, r.text
    serve_deploy(cluster, serve_config(cluster, **V3), "v3")

    def reconfigured():
        return all(http.get("/v1/status").json()["settings"]["default_timeout_s"] == 77 for _ in range(6))

    wait_until(reconfigured, 60, interval=0.25, what="both replicas reconfigured")
    assert running_replicas(cluster) == 2
    assert ingress_replicas(cluster) == replicas  # reconfigure, not replace
    r = http.post("/v1/deliberations", json={"role": "DEV", "task": "Sort a list."})
    assert r.status_code == 202
    assert http.get(r.json()["status_url"]).json()["request"]["constraints"]["timeout_s"] == 77
    for _ in range(4):  # the live limits too, on every replica
        r = http.post("/v1/deliberations", json=long_task)
        assert r.status_code == 422 and "200" in r.json()["error"]["message"], r.text


def test_changed_engine_rolls_over_to_a_new_actor_under_load(cluster, http, kv):
    new_actor = rolled_actor_name(EngineSpec.model_validate(NEW_ENGINE))
    # Stand-in for the new vLLM actor, under the name the rollover will ask for.
    new_engine = ray.remote(FakeEngine).options(
        name=new_actor, namespace="councils", lifetime="detached", max_restarts=-1, max_concurrency=64,
        num_cpus=0, get_if_exists=True).remote({"name": "fake"}, ENGINE_DELAY_S)
    old_engine = ray.get_actor("engine-fake", namespace="councils")
    councils_before = {n: a for n, a in alive_actors(cluster).items() if n.startswith("council-")}

    with Load(cluster.url, ROLES) as load:
        wait_until(lambda: load.count() >= 3, 60, what="load running")
        serve_deploy(cluster, serve_config(cluster, **V4), "v4")
        wait_until(lambda: kv.get("councils:engine:fake:actor") == new_actor, 180, interval=0.25,
                   what="engine fake switched to its new actor")
        wait_until(lambda: "engine-fake" not in alive_actors(cluster), 120, interval=0.5, what="old engine retired")
        calls_at_switch = ray.get(new_engine.health.remote())["calls"]
        time.sleep(3)
    assert load.failures() == [], load.failures()
    assert ray.get(new_engine.health.remote())["calls"] > calls_at_switch  # the councils use the new engine
    assert http.get("/v1/status").json()["engines"] == ["fake"]
    assert {n: a for n, a in alive_actors(cluster).items() if n.startswith("council-")} == councils_before
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(old_engine.health.remote(), timeout=30)


PROM_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    status, body = http_get(url, timeout=10)
    assert status == 200, body[:300]
    samples = []
    for line in body.splitlines():
        m = PROM_LINE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m["labels"] or ""))
        samples.append((m["name"], labels, float(m["value"])))
    return samples


def test_metrics_on_the_ray_metrics_endpoint(cluster, http):
    r = http.post("/v1/deliberations", params={"wait": "true"},
                  json={"role": "DATA", "task": "Design a schema for orders."})
    assert r.status_code == 200 and r.json()["status"] == "completed"
    # A stage the protocol skips (early stop, a rank the verifiers made needless) records no latency.
    ran = {stage.split("-")[0] for stage in r.json()["stages_done"]}
    assert {"propose", "score"} <= ran
    url = cluster.head.metrics_url

    def find(name: str, **tags):
        return [(labels, value) for n, labels, value in scrape(url)
                if n == name and all(labels.get(k) == v for k, v in tags.items())]

    wanted = [("ray_councils_deliberations_total", {"role": "DATA", "status": "completed"}),
              ("ray_councils_deliberation_latency_seconds_count", {"role": "DATA", "status": "completed"}),
              *(("ray_councils_stage_latency_seconds_count", {"role": "DATA", "stage": stage}) for stage in sorted(ran)),
              ("ray_councils_stage_latency_seconds_bucket", {"role": "DATA", "stage": "propose"}),
              ("ray_councils_tokens_total", {"role": "DATA", "engine": "fake", "kind": "completion"}),
              ("ray_councils_tokens_total", {"role": "DATA", "engine": "fake", "kind": "prompt"}),
              ("ray_councils_active_councils", {})]
    missing: list = []

    def all_there():
        missing[:] = [(name, tags) for name, tags in wanted if not find(name, **tags)]
        return not missing

    try:
        wait_until(all_there, 90, interval=1, what="councils_* metrics exported")
    except TimeoutError:
        raise AssertionError(f"not exported within 90 s: {missing}") from None
    assert max(v for _, v in find("ray_councils_deliberations_total", role="DATA", status="completed")) >= 1
    assert {lbl["stage"] for lbl, _ in find("ray_councils_stage_latency_seconds_count", role="DATA")} == ran
    assert max(v for _, v in find("ray_councils_active_councils")) == len(ROLES) + 1  # + SEC
    assert max(v for _, v in find("ray_councils_tokens_total", role="DATA", kind="completion")) > 0


def test_actor_gauges_on_the_ray_metrics_endpoint(cluster, http):
    """Ray's agent drops a gauge not reported again within ~20 s; the actors re-set theirs (metrics.py).
    This failed after the rollout tests above, whose deliberations had ended minutes earlier."""
    r = http.post("/v1/deliberations", params={"wait": "true"}, json={"role": "DATA", "task": "Design a schema."})
    assert r.status_code == 200 and r.json()["status"] == "completed"
    url = cluster.head.metrics_url

    def there():
        names = {(n, labels.get("role"), labels.get("engine")) for n, labels, _ in scrape(url)}
        return {("ray_councils_inflight_deliberations", "DATA", None),
                ("ray_councils_engine_restarts", None, "fake")} <= names

    wait_until(there, 90, interval=1, what="the actors' gauges exported")


def failed_deploy(cluster: LocalCluster, needle: str) -> str:
    """Wait for `serve status` to report DEPLOY_FAILED with a message that names `needle`; that message."""
    def failed():
        app = serve_status(cluster)
        messages = [app.get("message", "")] + [d.get("message", "") for d in app.get("deployments", {}).values()]
        text = "\n".join(messages)
        return app.get("status") == "DEPLOY_FAILED" and needle in text and text

    return wait_until(failed, 180, interval=0.25, what=f"DEPLOY_FAILED naming {needle}")


def test_bad_user_config_fails_the_deploy_naming_the_field(cluster, http):
    serve_deploy(cluster, serve_config(cluster, **dict(V4, user_config={"record_tll_s": 60})), "bad-user-config")
    message = failed_deploy(cluster, "record_tll_s")
    assert "Extra inputs are not permitted" in message
    # Replicas of the previous version keep serving.
    assert http.get("/readyz").status_code == 200
    r = http.post("/v1/deliberations", params={"wait": "true"}, json={"role": "DEV", "task": "Reverse a list."})
    assert r.status_code == 200


def test_config_typo_fails_the_deploy_naming_the_field(cluster, http):
    bad = serve_config(cluster, **V4)
    council = bad["applications"][0]["args"]["councils"][0]
    council["agentz"] = council.pop("agents")
    serve_deploy(cluster, bad, "typo")
    message = failed_deploy(cluster, "agentz")
    assert "Extra inputs are not permitted" in message and "AppConfig" in message
    # The running replicas kept serving through the failed deploy.
    assert http.get("/readyz").status_code == 200
    r = http.post("/v1/deliberations", params={"wait": "true"}, json={"role": "DEV", "task": "Reverse a list."})
    assert r.status_code == 200
    # The launcher reports the same message instead of waiting for readiness.
    assert "agentz" in serve_failures(cluster.head.dashboard_url)
