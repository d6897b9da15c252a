"""Phase of `make bench`: the default deliberation as `make run` ships it, over HTTP. Issue 22's latency target:
"Write a Python function that returns the n-th Fibonacci number." to the DEV council, no tests, everything else
the council's own (its agents, drafts, rounds and max_tokens), `POST /v1/deliberations?wait=true`, one at a time
on a quiet stack. Target: median ≤ 25 s on this machine. Each stage's time comes from the record's `timings`.

    python -m benchmarks.latency
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx

from actors.models.councils import CouncilSpec
from actors.models.requests import DeliberationRequest
from councils_local.valkey_server import free_port

from . import paths
from .common import (QUICK_ENV, WARMUP_TASK, machine_lock, save_run, start_launcher, stop_launcher,
                     wait_launcher_ready)
from .shapes import council_shape

DEFAULT_TASK = "Write a Python function that returns the n-th Fibonacci number."
ROLE = "DEV"
TARGET_S = 25.0


def reps() -> int:
    return 1 if os.environ.get(QUICK_ENV) == "1" else 5


async def measure(url: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        council = (await client.get(f"/v1/councils/{ROLE}")).raise_for_status().json()
        request = DeliberationRequest(role=ROLE, task=DEFAULT_TASK)
        await paths.post_wait(client, DeliberationRequest(role=ROLE, task=WARMUP_TASK))  # untimed warm-up
        rows = []
        for i in range(reps()):
            wall, record = await paths.post_wait(client, request)
            result = record["result"]
            rows.append({"wall_s": round(wall, 3), "council_duration_s": round(result["duration_s"], 3),
                         "decided_by": result["decided_by"], "stages_skipped": record["stages_skipped"],
                         "completion_tokens": result["usage"]["completion_tokens"],
                         "stages": [[t["stage"], round(t["seconds"], 3), round(t["generation_s"], 3),
                                     round(t["verification_s"], 3), t["calls"], t["batches"]]
                                    for t in record["timings"]]})
            print(f"latency rep {i}: {wall:.1f} s, decided by {result['decided_by']}", flush=True)
    return {"task": DEFAULT_TASK, "role": ROLE, "target_s": TARGET_S, "rows": rows,
            "shape": council_shape(CouncilSpec.model_validate(council), request)}


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    ports = {k: free_port() for k in ("valkey", "ray", "dashboard", "http")}
    with machine_lock():
        proc = start_launcher(data, ports)
        try:
            ready_s = wait_launcher_ready(proc, data)
            print(f"stack ready in {ready_s}s (data {data})", flush=True)
            t0 = time.time()
            out = asyncio.run(measure(f"http://127.0.0.1:{ports['http']}"))
            out["wall_s"] = round(time.time() - t0, 1)
        finally:
            stop_launcher(proc)
    print(f"wrote {save_run('latency', out)}")


if __name__ == "__main__":
    main()
