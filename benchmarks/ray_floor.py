"""Phase of `make bench`: the idle floor of Ray itself. A bare two-node Ray cluster on this machine, shaped as
`make run`'s (a head with `--num-cpus=0` and a worker node), with Ray's defaults and nothing of ours: no Valkey, no
Serve, no councils, no engine. Its processes' CPU while idle, measured as the stack's (benchmarks/idle.py), is the
floor the idle stack's figure is read against (issue 26: our overhead above it ≤ 5 % of one core).

    python -m benchmarks.ray_floor
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from councils_local.processes import OWNER_ENV, kill_tree
from councils_local.valkey_server import free_port

from .common import machine_lock, save_run
from .idle import idle_cpu

RAY = str(Path(sys.executable).parent / "ray")
SETTLE_S = 30  # after the worker node joined: start-up work (prestarted workers, the dashboard's modules) is over


def start(args: list[str], temp: Path, log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                                 f"--temp-dir={temp}", *args], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)


def wait_nodes(address: str, n: int, env: dict[str, str], timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        out = subprocess.run([RAY, "status", f"--address={address}"], capture_output=True, text=True, env=env)
        if out.returncode == 0 and out.stdout.count("node_") >= n:
            return
        time.sleep(2)
    raise TimeoutError(f"the bare Ray cluster did not show {n} nodes in {timeout_s:.0f}s")


def main() -> None:
    temp = Path(tempfile.mkdtemp(prefix="bench-ray-floor-"))
    port, dash = free_port(), free_port()
    # Token auth decided explicitly (Ray 2.60 turns it on when ~/.ray/auth_token exists): off, as Ray's default.
    # OWNER_ENV marks every process of this cluster, so the stop finds those Ray re-parents (its workers).
    marker = f"ray-floor-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COUNCILS_"))} | {
        "RAY_AUTH_MODE": "disabled", OWNER_ENV: marker}
    address = f"127.0.0.1:{port}"
    with machine_lock():
        head = start(["--head", f"--port={port}", "--num-cpus=0", f"--dashboard-port={dash}",
                      "--dashboard-host=127.0.0.1"], temp, temp / "head.log", env)
        worker = None
        try:
            wait_nodes(address, 1, env)
            worker = start([f"--address={address}", "--dashboard-agent-listen-port=0", "--metrics-export-port=0",
                            "--min-worker-port=0", "--max-worker-port=0"], temp, temp / "worker.log", env)
            wait_nodes(address, 2, env)
            idle = asyncio.run(idle_cpu(head.pid, worker.pid, settle_s=SETTLE_S))
        finally:
            for proc in (worker, head):
                if proc is not None:
                    kill_tree(proc.pid, 10, marker)
    out = {"cluster": "bare Ray: head --num-cpus=0 and one worker node, Ray's defaults, nothing of ours",
           "idle_cpu": idle}
    print(f"wrote {save_run('ray_floor', out)}")


if __name__ == "__main__":
    main()
