"""Time to recover: seconds from a SIGKILL to the next successful deliberation over HTTP, on the `make run`
stack (launcher: embedded Valkey, a Valkey-backed head and a worker node, the supervisor, Serve, the real
vLLM dev engine), on free ports with its own data dir.

For each fault, settings()["fault_reps"] times: a deliberation succeeds (the stack is healthy), the process is
SIGKILLed (a supervised one, the GCS or Valkey, only once the head has been up for the launcher's restart-backoff
window: every kill is then a first crash, restarted at once, not the next crash of a loop, which waits longer), then POST /v1/deliberations?wait=true (DEV, rounds 0, 16 tokens) is sent again and again until one
answers 200; the figure is the time from the kill to that answer.
  council   the council-DEV actor's worker process: Ray restarts it, it reads its spec and records from Valkey
  ingress   the Ingress's Serve replica process: Serve starts a new replica
  gcs       the head's gcs_server: the launcher's supervisor restarts the head (the worker node keeps running)
  head      the head's gcs_server and raylet together (a head node crash): as for gcs
  valkey    valkey-server: the supervisor restarts it from its AOF (Ray's GCS exits too and is restarted)
  engine    the vLLM engine-core process: the engine actor starts a new one (the model loads again)

    python -m benchmarks.faults [--faults council gcs ...]     # writes benchmarks/results/runs/faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from councils_local.processes import owned_processes
from councils_local.supervisor import Backoff
from councils_local.valkey_server import free_port

from .common import machine_lock, median, save_run, settings, start_launcher, stop_launcher, wait_launcher_ready
from .shapes import council_shape

FAULTS = ["council", "ingress", "gcs", "head", "valkey", "engine"]
BODY = {"role": "DEV", "task": "Say hello.", "rounds": 0, "max_tokens": 16}
GIVE_UP_S = 600
SUPERVISED = {"gcs", "head", "valkey"}  # restarted by the launcher's supervisor (each restarts the head)
# A head restarted less than this ago counts a new crash as one more "in a row" and restarts it after a delay.
SETTLE_S = Backoff().stable_s + 5


class Stack:
    """The launcher's processes, found by what they are (the launcher's descendants and session)."""

    def __init__(self, proc: subprocess.Popen, data: Path, ports: dict[str, int]):
        self.proc, self.data, self.ports = proc, data, ports

    def process(self, match) -> psutil.Process:
        found = []
        for p in owned_processes(self.proc.pid):
            try:
                if match(p.name(), " ".join(p.cmdline())):
                    found.append(p)
            except psutil.Error:
                continue
        if len(found) != 1:
            raise RuntimeError(f"expected one matching process, found {[(p.pid, p.name()) for p in found]}")
        return found[0]

    def actor_pid(self, *filters: str) -> int:
        """The one ALIVE actor matching `filters`, by `ray list actors` (the documented CLI) with make run's
        Ray token."""
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.data / "ray-auth-token")}
        cmd = [str(Path(sys.executable).with_name("ray")), "list", "actors", "--address",
               f"127.0.0.1:{self.ports['ray']}", "--format", "json", "--filter", "state=ALIVE"]
        for f in filters:
            cmd += ["--filter", f]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        (actor,) = json.loads(out.stdout)
        return int(actor["pid"])

    def victims(self, fault: str) -> list[int]:
        if fault == "council":
            return [self.actor_pid("name=council-DEV")]
        if fault == "ingress":
            return [self.actor_pid("class_name=ServeReplica:councils:Ingress")]
        if fault == "gcs":
            return [self.process(lambda name, cmd: name == "gcs_server").pid]
        if fault == "head":
            return [self.process(lambda name, cmd: name == "gcs_server").pid,
                    self.process(lambda name, cmd: name == "raylet" and "--head" in cmd.split()).pid]
        if fault == "valkey":
            return [self.process(lambda name, cmd: name == "valkey-server").pid]
        if fault == "engine":
            return [self.process(lambda name, cmd: "EngineCore" in name or "EngineCore" in cmd).pid]
        raise ValueError(fault)


def deliberate(client: httpx.Client) -> float | None:
    """Seconds of one successful deliberation over HTTP, or None (refused, failed, connection error)."""
    t0 = time.time()
    try:
        r = client.post("/v1/deliberations", params={"wait": "true"}, json=BODY)
    except httpx.HTTPError:
        return None
    return round(time.time() - t0, 2) if r.status_code == 200 and r.json()["status"] == "completed" else None


def request_shape(client: httpx.Client) -> dict:
    """The shape BODY runs with on make run's council of its role (benchmarks/shapes.py), for the record."""
    from actors.models.councils import CouncilSpec
    from actors.models.requests import DeliberationRequest

    resp = client.get(f"/v1/councils/{BODY['role']}")
    resp.raise_for_status()
    return council_shape(CouncilSpec.model_validate(resp.json()), DeliberationRequest.model_validate(BODY))


def until_deliberation(client: httpx.Client) -> tuple[float, int]:
    """Keep trying until a deliberation succeeds: (its wall time, attempts that failed first)."""
    failed, deadline = 0, time.time() + GIVE_UP_S
    while time.time() < deadline:
        took = deliberate(client)
        if took is not None:
            return took, failed
        failed += 1
        time.sleep(0.5)
    raise TimeoutError(f"no successful deliberation within {GIVE_UP_S}s")


def measure(stack: Stack, client: httpx.Client, fault: str, last_kill: dict) -> dict:
    healthy_s, _ = until_deliberation(client)  # the stack is healthy before the kill
    if fault in SUPERVISED and (wait_s := last_kill.get("supervised", 0) + SETTLE_S - time.time()) > 0:
        print(f"{fault}: waiting {wait_s:.0f}s for the supervisor's backoff window", flush=True)
        time.sleep(wait_s)
        healthy_s, _ = until_deliberation(client)
    pids = stack.victims(fault)
    t0 = time.time()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    last_s, failed = until_deliberation(client)
    if fault in SUPERVISED:
        last_kill["supervised"] = time.time()
    row = {"recovered_s": round(time.time() - t0, 2), "last_deliberation_s": last_s, "failed_attempts": failed,
           "healthy_deliberation_s": healthy_s, "victim_pids": pids}
    try:
        row["new_pids"] = stack.victims(fault)
    except (RuntimeError, ValueError, psutil.Error, subprocess.SubprocessError) as exc:  # e.g. not back yet: say so
        row["new_pids"] = f"not found: {exc}"
    print(f"{fault}: {row}", flush=True)
    return row


def summarise(rows: list[dict]) -> dict:
    xs = [r["recovered_s"] for r in rows]
    return {"median_s": median(xs), "min_s": min(xs), "max_s": max(xs), "n": len(xs),
            "healthy_deliberation_s": median([r["healthy_deliberation_s"] for r in rows])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faults", nargs="+", choices=FAULTS, default=FAULTS)
    ap.add_argument("--reps", type=int, default=settings()["fault_reps"])
    ap.add_argument("--note", default="", help="circumstances of the run for the report, e.g. other load on the machine")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    ports = {k: free_port() for k in ("valkey", "ray", "dashboard", "http")}
    out: dict = {"faults": {}, "request": BODY, "note": args.note}
    with machine_lock():
        proc = start_launcher(data, ports)
        try:
            out["stack_ready_s"] = wait_launcher_ready(proc, data)
            print(f"stack ready in {out['stack_ready_s']}s (data {data})", flush=True)
            stack = Stack(proc, data, ports)
            with httpx.Client(base_url=f"http://127.0.0.1:{ports['http']}", timeout=300) as client:
                last_kill: dict = {}
                for fault in args.faults:
                    rows = [measure(stack, client, fault, last_kill) for _ in range(args.reps)]
                    out["faults"][fault] = {"reps": rows, **summarise(rows)}
                out["shape"] = request_shape(client)  # the stack answered since the last kill: its council is there
        finally:
            stop_launcher(proc)
    print(f"wrote {save_run('faults', out)}")


if __name__ == "__main__":
    main()
