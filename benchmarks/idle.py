"""CPU the idle `make run` stack uses, by component (part of the `stack` phase): every process of the launcher's
tree, its CPU time over a window while no deliberation runs, as % of one core."""

from __future__ import annotations

import asyncio
import time

import psutil


def _kind(cmd: str) -> str:
    if cmd.startswith("ray::Council"):
        return "council actors"
    if cmd.startswith(("ray::Engine", "VLLM::")):
        return "engine"
    if cmd.startswith(("ray::ServeController", "ray::ProxyActor", "ray::ServeReplica")):
        return "Serve (controller, proxy, ingress)"
    if "valkey-server" in cmd:
        return "Valkey"
    if "launcher" in cmd:
        return "launcher"
    return "Ray control plane (GCS, raylet, dashboard, agents)"


def _name(cmd: str) -> str:
    """A process's short name: `ray::ServeController`, `gcs_server`, `dashboard.py`, `ray-dashboard-NodeHead-0`."""
    first = cmd.split(" ")[0]
    if first.startswith(("ray::", "VLLM::", "ray-dashboard-")):
        return first.split(".")[0]
    words = cmd.split(" ")
    if "-m" in words[:3] and words.index("-m") + 1 < len(words):
        return words[words.index("-m") + 1]
    for word in words[:3]:
        if word.endswith(".py") or "/" in word:
            name = word.rsplit("/", 1)[-1]
            if name not in ("python", "python3"):
                return name
    return first.rsplit("/", 1)[-1]


def _cpu_by_pid(root: int) -> dict[int, tuple[str, float, int]]:
    out = {}
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = (" ".join(p.cmdline()), t.user + t.system, p.nice())
        except psutil.Error:
            pass
    return out


async def idle_cpu(*roots: int, seconds: float = 30, settle_s: float = 15) -> dict:
    """CPU the processes under `roots` (the launcher's tree: the stack's own processes) use while no deliberation
    runs, by kind, as % of one core; and the nice value of each kind (Ray starts its workers, the engine included,
    at RAY_worker_niceness=15). Measured `settle_s` after the last request, so no answer still being finished is
    counted."""
    await asyncio.sleep(settle_s)
    before = {pid: v for root in roots for pid, v in _cpu_by_pid(root).items()}
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    after = {pid: v for root in roots for pid, v in _cpu_by_pid(root).items()}
    dt = time.perf_counter() - t0
    kinds: dict[str, dict] = {}
    procs = []
    for pid, (cmd, cpu, nice) in after.items():
        if pid not in before:
            continue
        pct = 100 * (cpu - before[pid][1]) / dt
        procs.append({"process": _name(cmd), "cpu_pct_of_one_core": round(pct, 1)})
        k = kinds.setdefault(_kind(cmd), {"cpu_pct_of_one_core": 0.0, "processes": 0, "nice": set()})
        k["cpu_pct_of_one_core"] += pct
        k["processes"] += 1
        k["nice"].add(nice)
    for k in kinds.values():
        k["cpu_pct_of_one_core"] = round(k["cpu_pct_of_one_core"], 1)
        k["nice"] = sorted(k["nice"])
    total = round(sum(k["cpu_pct_of_one_core"] for k in kinds.values()), 1)
    print(f"idle: {total}% of one core over {seconds:.0f}s: {kinds}", flush=True)
    top = sorted(procs, key=lambda p: -p["cpu_pct_of_one_core"])[:12]
    return {"seconds": seconds, "settle_s": settle_s, "total_cpu_pct_of_one_core": total, "by_kind": kinds,
            "processes": len(procs), "top_processes": top}
