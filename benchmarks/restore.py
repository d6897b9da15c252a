"""What the ingress does on start, timed (part of the `stack` phase): council specs loaded from Valkey, each
council's constructor, and council actors restored on the stack's Ray cluster (docs/benchmarks.md, restore)."""

from __future__ import annotations

import asyncio
import time

import psutil

from .common import median, settings


def council_processes() -> list[psutil.Process]:
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::Council"):
            procs.append(p)
    return procs


async def write_specs(store, n: int, tag: str) -> list[str]:
    from actors.models.councils import default_council

    roles = [f"R{tag}{i:04d}" for i in range(n)]
    for role in roles:
        await store.put_council(default_council(role, "smollm2", n_agents=3, rounds=1, max_tokens=96))
    return roles


async def restore(valkey_url: str) -> dict:
    import ray

    from actors.council import Council
    from actors.store import Store
    from serve_app.registry import ActorRegistry

    s = settings()
    out: dict = {"spec_load": {}, "constructor": {}, "actors": {}}
    # 1. Spec load from Valkey: what the reconcile reads first (SMEMBERS + MGET + validation).
    for n in s["restore_spec_counts"]:
        store = Store(valkey_url, f"benchspecs{n}:")
        await write_specs(store, n, f"S{n}X")
        times = []
        for _ in range(s["restore_spec_reps"]):
            t0 = time.perf_counter()
            specs = await store.list_councils()
            times.append(time.perf_counter() - t0)
            assert len(specs) == n
        # 2. The council constructor's Valkey work, in this process (no actor, no Ray worker):
        #    what each restored council reads (spec, unfinished set, settings) on a fresh connection.
        t0 = time.perf_counter()
        for c in specs:
            Council(c.role, valkey_url, f"benchspecs{n}:")
        ctor = time.perf_counter() - t0
        await store.close()
        out["spec_load"][str(n)] = {"runs_s": [round(t, 4) for t in times], "median_s": median(times)}
        out["constructor"][str(n)] = {"total_s": round(ctor, 3), "per_council_ms": round(1000 * ctor / n, 2)}
        print(f"{n} specs: list_councils {median(times) * 1000:.1f} ms; {n} constructors in-process {ctor:.2f}s",
              flush=True)
    # 3. Actor restore: the reconcile's get-or-create + info() of every council, on the Ray cluster.
    for n in (int(k) for k in s["restore_actor_reps"]):
        prefix = f"benchactors{n}:"
        store = Store(valkey_url, prefix)
        await write_specs(store, n, f"A{n}X")
        registry = ActorRegistry(valkey_url, prefix, 3600)
        runs = []
        for rep in range(s["restore_actor_reps"][str(n)]):
            before = {p.pid for p in council_processes()}  # the stack's own councils
            t0 = time.perf_counter()
            specs = await store.list_councils()
            handles = [registry.council(c.role) for c in specs]
            infos = await asyncio.gather(*(h.info.remote() for h in handles))
            wall = time.perf_counter() - t0
            assert all(i["version"] == 1 for i in infos), infos
            new = [p for p in council_processes() if p.pid not in before]
            rss = 0.0
            for p in new:
                try:
                    rss += p.memory_info().rss / 2**20
                except psutil.NoSuchProcess:
                    pass
            runs.append({"wall_s": round(wall, 3), "new_council_processes": len(new),
                         "council_rss_mib_total": round(rss, 1)})
            print(f"restore {n} council actors, rep {rep + 1}: {runs[-1]}", flush=True)
            for h in handles:
                ray.kill(h, no_restart=True)
            await _wait_gone([c.role for c in specs], len(before))
        await store.close()
        per_actor_rss = [r["council_rss_mib_total"] / max(r["new_council_processes"], 1) for r in runs]
        out["actors"][str(n)] = {"runs": runs, "median_s": median([r["wall_s"] for r in runs]),
                                 "rss_mib_per_actor": median(per_actor_rss)}
    return out


async def _wait_gone(roles: list[str], baseline: int, timeout_s: float = 120) -> None:
    """Until the killed councils' names are free and their processes have exited."""
    import ray

    from actors.council import NAMESPACE, council_actor_name

    names = {council_actor_name(r) for r in roles}
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        alive = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == NAMESPACE}
        if not names & alive and len(council_processes()) <= baseline:
            return
        await asyncio.sleep(0.5)
