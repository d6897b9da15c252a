"""Chaos (issue 16): deliberations over HTTP while a seeded random schedule SIGKILLs real processes.

A load thread keeps CONCURRENT deliberations in flight through Serve (POST /v1/deliberations, 202) on a
supervised test cluster (tests/ray_cluster.py: Valkey-backed GCS, the launcher's supervisor, the
deterministic test engine), while the schedule kills, in a seeded order with seeded pauses and victims:
a council's worker process, the engine actor's process, the GCS (the supervisor restarts the head),
valkey-server (the supervisor restarts it from its AOF) and the ingress's Serve replica process. After
each kill it checks the kill took (a new PID, a supervisor restart) and waits for /readyz.

Then, read from Valkey (docs/operations.md, "Valkey keys"), over every record there (also one whose
202 was lost in a kill): every deliberation finished `completed` (`timeout` only past its deadline),
exactly one completion event each on councils:events, no record unfinished or without a TTL, no
active set left, no stage twice in stages_done, and the stats hash equal to the records.

The seed is printed; replay a failure with
    COUNCILS_CHAOS_SEED=<seed> .venv/bin/python -m pytest tests/test_chaos.py -v -s
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter

import httpx
import pytest
import ray

from tests.faults import actor, connect_when_up, head_process, ingress_replicas
from tests.ray_cluster import ROLES, running_cluster, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SEED_ENV = "COUNCILS_CHAOS_SEED"
SEED = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1_000_000))
CONCURRENT = 5  # deliberations the load keeps in flight
STAGE_DELAY_S = 0.4  # per engine call: a deliberation of 1-3 rounds runs ~2-4 s, so kills land mid-stage
DEADLINE_S = 900  # every deliberation's timeout_s: far past the run, so none may end `timeout`
FINISHED = ("completed", "failed", "timeout")
PREFIX = "councils:"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("chaos"), engine_delay_s=STAGE_DELAY_S, supervise=True) as c:
        yield c


class Load:
    """Keeps CONCURRENT deliberations in flight over HTTP until stopped; remembers every id accepted (202).
    Refusals and connection errors while a part is down are counted, not failures: only accepted work counts."""

    def __init__(self, url: str, rng: random.Random):
        self.url, self.rng = url, rng
        self.accepted: list[str] = []
        self.in_flight: set[str] = set()
        self.refused: Counter = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="chaos-load", daemon=True)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self.stop.is_set():
                self._forget_finished(http)
                while len(self.in_flight) < CONCURRENT and not self.stop.is_set() and self._submit(http):
                    pass
                self.stop.wait(0.3)

    def _forget_finished(self, http: httpx.Client) -> None:
        for delib_id in list(self.in_flight):
            try:
                if http.get(f"/v1/deliberations/{delib_id}").json()["status"] in FINISHED:
                    self.in_flight.discard(delib_id)
            except Exception:
                return  # the ingress is down: try again later

    def _submit(self, http: httpx.Client) -> bool:
        role = ROLES[len(self.accepted) % len(ROLES)]
        body = {"role": role, "task": f"Design a rate limiter ({len(self.accepted)}).",
                "rounds": self.rng.randint(1, 3), "constraints": {"timeout_s": DEADLINE_S}}
        try:
            r = http.post("/v1/deliberations", json=body)
        except httpx.HTTPError as exc:
            self.refused[type(exc).__name__] += 1
            return False
        if r.status_code != 202:
            self.refused[r.status_code] += 1
            return False
        self.accepted.append(r.json()["id"])
        self.in_flight.add(r.json()["id"])
        return True


# ---------------------------------------------------------------- the faults: kill, then "did it take?"


def kill_council(cluster, rng):
    role = rng.choice(ROLES)
    victim = actor(cluster, f"council-{role}")
    os.kill(victim.pid, signal.SIGKILL)
    return f"council-{role} worker (pid {victim.pid})", lambda: actor(cluster, f"council-{role}").pid != victim.pid


def kill_engine(cluster, rng):
    victim = actor(cluster, "engine-fake")
    os.kill(victim.pid, signal.SIGKILL)
    return f"engine-fake (pid {victim.pid})", lambda: actor(cluster, "engine-fake").pid != victim.pid


def kill_ingress(cluster, rng):
    victim = rng.choice(sorted(ingress_replicas(cluster), key=lambda r: r.pid))
    os.kill(victim.pid, signal.SIGKILL)
    return (f"ingress replica (pid {victim.pid})",
            lambda: (pids := [r.pid for r in ingress_replicas(cluster)]) and victim.pid not in pids)


def kill_gcs(cluster, rng):
    restarts = cluster.supervisor.restarts["head"]
    gcs = head_process(cluster, "gcs_server")
    os.kill(gcs.pid, signal.SIGKILL)
    return f"gcs_server (pid {gcs.pid})", lambda: cluster.supervisor.restarts["head"] > restarts


def kill_valkey(cluster, rng):
    restarts = cluster.supervisor.restarts["valkey"]
    pid = cluster.valkey.proc.pid
    cluster.valkey.kill()  # SIGKILL
    return f"valkey-server (pid {pid})", lambda: cluster.supervisor.restarts["valkey"] > restarts


FAULTS = {"council": kill_council, "engine": kill_engine, "ingress": kill_ingress, "gcs": kill_gcs,
          "valkey": kill_valkey}
CUTS_THE_DRIVER = {"gcs", "valkey"}  # the driver's connection to the GCS does not survive these


def run_schedule(cluster, load: Load, rng: random.Random) -> list[dict]:
    """Every fault once, in a seeded order, each after a seeded pause with deliberations in flight."""
    log = []
    for name in rng.sample(sorted(FAULTS), len(FAULTS)):
        time.sleep(rng.uniform(1.0, 4.0))
        wait_until(lambda: len(load.in_flight) >= 2, 60, what="deliberations in flight before a kill")
        t0 = time.time()
        what, took = FAULTS[name](cluster, rng)
        print(f"[chaos] SIGKILL {what} with {len(load.in_flight)} deliberations in flight", flush=True)
        wait_until(took, 120, interval=0.5, what=f"the {name} kill took (new process / supervisor restart)")
        if name in CUTS_THE_DRIVER:
            ray.shutdown()
            connect_when_up(cluster)
        wait_until(lambda: cluster.client(timeout=5).get("/readyz").status_code == 200, 300, interval=0.25,
                   what=f"ready after the {name} kill")
        log.append({"fault": name, "victim": what, "ready_after_s": round(time.time() - t0, 1)})
        print(f"[chaos] ready {log[-1]['ready_after_s']}s after the {name} kill", flush=True)
    return log


# ---------------------------------------------------------------- the invariants, read from Valkey


def records(kv, prefix: str = PREFIX) -> dict[str, dict]:
    """Every deliberation record (`<prefix>delib:<id>`, not its :events/:owner/:lease/... keys)."""
    keys = [k for k in kv.scan_iter(f"{prefix}delib:*", count=1000) if ":" not in k[len(f"{prefix}delib:"):]]
    return {k.rsplit(":", 1)[1]: json.loads(raw) for k in keys if (raw := kv.get(k)) is not None}


def unfinished(kv) -> list[str]:
    return [i for i, r in records(kv).items() if r["status"] not in FINISHED]


def violations(kv, accepted: list[str], prefix: str = PREFIX) -> list[str]:
    recs = records(kv, prefix)
    bad = [f"accepted {i} has no record" for i in accepted if i not in recs]
    for i, r in recs.items():
        deadline = r["created_at"] + r["request"]["constraints"]["timeout_s"]
        if r["status"] == "timeout" and (r["finished_at"] or 0) < deadline:
            bad.append(f"{i} ended timeout before its deadline")
        elif r["status"] not in ("completed", "timeout"):
            bad.append(f"{i} ended {r['status']}: {r['error']}")
        if kv.ttl(f"{prefix}delib:{i}") <= 0:
            bad.append(f"{i} has no TTL")
        for suffix in ("events", "owner"):
            if kv.exists(key := f"{prefix}delib:{i}:{suffix}") and kv.ttl(key) <= 0:
                bad.append(f"{key} has no TTL")
        if dup := [s for s, n in Counter(r["stages_done"]).items() if n > 1]:
            bad.append(f"{i} ran stages twice: {dup} in {r['stages_done']}")
    events = Counter()
    for _, fields in kv.xrange(f"{prefix}events"):
        if fields["kind"] in ("deliberation.completed", "deliberation.failed"):
            events[json.loads(fields["data"])["id"]] += 1
    bad += [f"{i}: {events[i]} completion events" for i in set(recs) | set(events) if events[i] != 1]
    bad += [f"{k} still holds {kv.smembers(k)}" for k in kv.scan_iter(f"{prefix}active:*") if kv.scard(k)]
    bad += stats_mismatches(kv, recs, prefix)
    return bad


def stats_mismatches(kv, recs: dict[str, dict], prefix: str) -> list[str]:
    """The stats hash and the durations lists against what the records say."""
    want: Counter = Counter()
    durations: Counter = Counter()
    for r in recs.values():
        role = r["request"]["role"]
        want[f"accepted.{role}"] += 1
        want[f"deliberations.{role}.{r['status']}"] += 1
        if r["result"]:
            want[f"tokens.{role}.prompt"] += r["result"]["usage"]["prompt_tokens"]
            want[f"tokens.{role}.completion"] += r["result"]["usage"]["completion_tokens"]
            durations[role] += 1
    have = {k: int(v) for k, v in kv.hgetall(f"{prefix}stats").items() if int(v)}
    bad = [f"stats {k}: {have.get(k, 0)}, the records say {want[k]}" for k in set(have) | set(want)
           if have.get(k, 0) != want[k]]
    bad += [f"durations:{role}: {n} samples, {durations[role]} records with a result"
            for role in ROLES if (n := kv.llen(f"{prefix}durations:{role}")) != durations[role]]
    return bad


def test_seeded_chaos_loses_no_deliberation_and_counts_each_once(cluster):
    print(f"\n[chaos] seed {SEED} (replay: {SEED_ENV}={SEED})", flush=True)
    rng = random.Random(SEED)
    load = Load(cluster.url, random.Random(rng.random()))
    load.thread.start()
    t0 = time.time()
    try:
        log = run_schedule(cluster, load, rng)
        time.sleep(rng.uniform(1.0, 4.0))  # a little load on the healed cluster, then drain
    finally:
        load.stop.set()
        load.thread.join(30)
    print(f"[chaos] {len(log)} kills in {time.time() - t0:.0f}s; {len(load.accepted)} deliberations accepted; "
          f"refused while down: {dict(load.refused)}", flush=True)
    assert [e["fault"] for e in log] and sorted(e["fault"] for e in log) == sorted(FAULTS)
    assert len(load.accepted) > CONCURRENT, f"seed {SEED}: no deliberation was accepted after the first ones"
    import valkey

    kv = valkey.Valkey.from_url(cluster.valkey.url, decode_responses=True)  # the restarted server
    try:
        wait_until(lambda: not unfinished(kv), 300, interval=0.25, what=f"every deliberation finished (seed {SEED})")
        bad = violations(kv, load.accepted)
    finally:
        kv.close()
    assert not bad, f"seed {SEED} ({SEED_ENV}={SEED} replays it): {len(bad)} violations:\n" + "\n".join(bad[:40])


def test_the_invariant_checks_catch_each_violation(valkey_server, key_prefix):
    """The chaos test's checks on a hand-made state: silent on a consistent one, and each breakage is named."""
    import valkey

    kv = valkey.Valkey.from_url(valkey_server.url, decode_responses=True)
    p = key_prefix

    def consistent(status="completed", stages=("propose", "critique-1", "revise-1", "score"), finished_at=None):
        kv.delete(*(list(kv.scan_iter(f"{p}*")) or [f"{p}none"]))
        usage = {"prompt_tokens": 30, "completion_tokens": 12}
        rec = {"status": status, "error": None, "created_at": 1000.0, "finished_at": finished_at or 1010.0,
               "stages_done": list(stages), "request": {"role": "QA", "constraints": {"timeout_s": 60}},
               "result": {"usage": usage} if status == "completed" else None}
        kv.set(f"{p}delib:a1", json.dumps(rec), ex=600)
        kv.set(f"{p}delib:a1:owner", 1, ex=600)
        kv.xadd(f"{p}delib:a1:events", {"kind": "terminal", "data": "{}"})
        kv.expire(f"{p}delib:a1:events", 600)
        kind = "deliberation.completed" if status == "completed" else "deliberation.failed"
        kv.xadd(f"{p}events", {"kind": kind, "data": json.dumps({"id": "a1"})})
        kv.hset(f"{p}stats", mapping={"accepted.QA": 1, f"deliberations.QA.{status}": 1,
                                      **({"tokens.QA.prompt": 30, "tokens.QA.completion": 12}
                                         if status == "completed" else {})})
        if status == "completed":
            kv.lpush(f"{p}durations:QA", 10.0)

    def found() -> str:
        return "\n".join(violations(kv, ["a1"], p))

    try:
        consistent()
        assert found() == ""
        consistent(status="timeout", finished_at=1061.0)  # past its deadline (created 1000 + 60 s): fine
        assert found() == ""
        consistent(status="timeout", finished_at=1030.0)
        assert "a1 ended timeout before its deadline" in found()
        consistent(status="failed")
        assert "a1 ended failed" in found()
        consistent()
        assert "b2 has no record" in "\n".join(violations(kv, ["a1", "b2"], p))
        kv.persist(f"{p}delib:a1")
        assert "a1 has no TTL" in found()
        consistent()
        kv.persist(f"{p}delib:a1:events")
        assert f"{p}delib:a1:events has no TTL" in found()
        consistent(stages=("propose", "critique-1", "propose", "score"))
        assert "a1 ran stages twice: ['propose']" in found()
        consistent()
        kv.xadd(f"{p}events", {"kind": "deliberation.completed", "data": json.dumps({"id": "a1"})})
        assert "a1: 2 completion events" in found()
        consistent()
        kv.delete(f"{p}events")
        assert "a1: 0 completion events" in found()
        consistent()
        kv.sadd(f"{p}active:QA", "a1")
        assert f"{p}active:QA still holds" in found()
        consistent()
        kv.hincrby(f"{p}stats", "deliberations.QA.completed", 1)
        assert "stats deliberations.QA.completed: 2, the records say 1" in found()
        consistent()
        kv.hincrby(f"{p}stats", "tokens.QA.prompt", 5)
        assert "stats tokens.QA.prompt: 35, the records say 30" in found()
        consistent()
        kv.lpush(f"{p}durations:QA", 10.0)
        assert "durations:QA: 2 samples, 1 records with a result" in found()
    finally:
        kv.delete(*(list(kv.scan_iter(f"{p}*")) or [f"{p}none"]))
        kv.close()
