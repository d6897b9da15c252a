"""Phase 2 of `make bench`: the `make run` stack (launcher: embedded Valkey, Valkey-backed Ray head,
`serve deploy configs/local.yaml`, the real vLLM engine actor), on free ports with its own data dir.

  paths       the benchmark council's deliberation on the service path (POST /v1/deliberations?wait=true)
              interleaved task by task with the same protocol on the stack's engine actor, on a bare engine in
              this driver, and on a stock vLLM OpenAI server (concurrent HTTP and the original, sequential
              design); then the same with a ~1,500-token context (benchmarks/paths.py);
  idle CPU    the stack's own processes by component, once the other engines are gone;
  throughput  1, 4 and 16 concurrent deliberations spread round-robin over the five default councils
              (DEV, QA, ARCHITECT, DEVOPS, DATA) as shipped (their agents, drafts, rounds, max_tokens), then
              the engine's own throughput at matched concurrency: for each wave, as many raw `generate` calls
              as its deliberations made, of the same kinds and lengths, at most as many in flight as they kept
              on average (read from their records' stage timings: benchmarks/matched.py), made from this
              driver straight to the engine actor with prompts built from those deliberations;
  restore     N council specs written under a fresh key prefix of the stack's Valkey, then the ingress's
              reconcile, timed: Store.list_councils + get-or-create of every council actor (its real
              constructor reads its spec, unfinished records and settings from Valkey) + its info().
              Engines are not involved (councils resolve them lazily), so engine load is excluded.

    python -m benchmarks.stack                     # writes benchmarks/results/runs/stack.json
    python -m benchmarks.stack --parts paths idle  # a part of it: runs/stack_paths_idle.json
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from councils_local.valkey_server import free_port

from . import paths
from .common import (TASKS, bench_request, machine_lock, median, save_run, settings, start_launcher, stop_launcher,
                     wait_launcher_ready)
from .idle import idle_cpu
from .matched import Matched, matched
from .restore import restore
from .shapes import council_shape, merged

DEFAULT_ROLES = ["DEV", "QA", "ARCHITECT", "DEVOPS", "DATA"]


# ---------------------------------------------------------------- throughput


def shipped_request(task: str, role: str):
    """A throughput request that leaves the shape to the council: `make run`'s default councils as shipped (their
    agents, drafts, rounds and max_tokens; settings()["throughput_max_tokens"] caps max_tokens in quick mode)."""
    return bench_request(task, role=role).model_copy(
        update={"rounds": None, "num_agents": None, "max_tokens": settings()["throughput_max_tokens"]})


async def deliberation_wave(client: httpx.AsyncClient, c: int, wave: int) -> tuple[dict, list[dict]]:
    requests = [shipped_request(TASKS[(wave * c + j) % len(TASKS)], DEFAULT_ROLES[j % len(DEFAULT_ROLES)])
                for j in range(c)]
    t0 = time.perf_counter()
    done = await asyncio.gather(*(paths.post_wait(client, r) for r in requests))
    wall = time.perf_counter() - t0
    records = [rec for _, rec in done]
    tokens = sum(r["result"]["usage"]["completion_tokens"] for r in records)
    return {"wall_s": round(wall, 3), "deliberations": c, "completion_tokens": tokens,
            "deliberations_per_min": round(60 * c / wall, 2), "deliberations_per_hour": round(3600 * c / wall, 1),
            "tokens_per_s": round(tokens / wall, 2), "median_latency_s": median([w for w, _ in done])}, records


@dataclass(frozen=True)
class RawCall:
    messages: list[dict]
    temperature: float
    max_tokens: int
    json_schema: dict | None = None


def raw_calls(records: list[dict], plan: Matched, councils: dict) -> list[RawCall]:
    """The engine-alone calls matched to a wave (benchmarks/matched.py): as many of each kind as its deliberations
    made, in stage order, each built by that kind's prompt builder (actors/protocol.py) from the wave's records
    (call i of a kind from record i mod len(records), seat i // len(records)) and the councils' agents, max_tokens at
    the kind's mean answer length in the wave. The propose stage's count includes the test writer's call (its timing
    does not tell them apart): all are built as proposals. Unseeded: a raw call need not reproduce the
    deliberation's answer, only its kind and lengths."""
    from actors.models.records import Proposal
    from actors.models.requests import DeliberationRequest
    from actors.protocol import (critique_messages, labels, propose_messages, rank_messages, ranking_schema,
                                 revise_messages)

    out = []
    for kind, calls in plan.by_kind.items():
        max_tokens = max(1, round(calls.completion_per_call))
        for i in range(calls.calls):
            record = records[i % len(records)]
            request = DeliberationRequest.model_validate(record["request"])
            council, nonce = councils[request.role], record["nonce"]
            proposals = [Proposal.model_validate(p) for p in record["result"]["proposals"]]
            seat = (i // len(records)) % len(proposals)
            own, target = proposals[seat], proposals[(seat + 1) % len(proposals)]
            agent = next((a for a in council.agents if a.id == own.author), council.agents[0])
            schema = None
            if kind == "propose":
                messages = propose_messages(agent, request, nonce)
            elif kind == "critique":
                messages = critique_messages(agent, request, target, nonce)
            elif kind == "revise":
                critique = next((v.critique for v in target.versions if v.critique), "")
                messages = revise_messages(agent, request, target, critique, nonce)
            elif kind == "rank":
                others = [p for p in proposals if p.author != own.author]
                messages, schema = rank_messages(agent, request, others, nonce), ranking_schema(labels(len(others)))
            else:
                raise ValueError(f"no raw call for a {kind} stage")
            out.append(RawCall(messages, agent.temperature, max_tokens, schema))
    return out


async def engine_wave(engine, calls: list[RawCall], concurrency: int) -> dict:
    """The calls straight to the engine actor, at most `concurrency` in flight (a slot refilled as a call returns)."""
    slots = asyncio.Semaphore(concurrency)

    async def one(call: RawCall) -> dict:
        async with slots:
            return await engine.generate.remote(call.messages, temperature=call.temperature,
                                                max_tokens=call.max_tokens, seed=None, json_schema=call.json_schema)

    t0 = time.perf_counter()
    outs = await asyncio.gather(*(one(c) for c in calls))
    wall = time.perf_counter() - t0
    tokens = sum(o["completion_tokens"] for o in outs)
    return {"wall_s": round(wall, 3), "calls": len(calls), "concurrency": concurrency, "completion_tokens": tokens,
            "prompt_tokens_per_call": round(sum(o["prompt_tokens"] for o in outs) / len(outs), 1),
            "completion_tokens_per_call": round(tokens / len(outs), 1), "tokens_per_s": round(tokens / wall, 2)}


async def default_councils(client: httpx.AsyncClient) -> list[dict]:
    """The five default councils as `make run` creates them (for the record)."""
    specs = []
    for role in DEFAULT_ROLES:
        resp = await client.get(f"/v1/councils/{role}")
        resp.raise_for_status()
        specs.append(resp.json())
    return specs


async def throughput(client: httpx.AsyncClient, engine) -> dict:
    """Waves of c concurrent deliberations on the default councils as shipped; then, for each wave, the engine
    alone on the calls that wave made, at the mean concurrency it kept them in flight (benchmarks/matched.py)."""
    from actors.models.councils import CouncilSpec

    s = settings()
    specs = await default_councils(client)
    councils = {spec["role"]: CouncilSpec.model_validate(spec) for spec in specs}
    shape = merged([council_shape(councils[role], shipped_request(TASKS[0], role)) for role in DEFAULT_ROLES])
    out: dict = {}
    for c in s["throughput_concurrency"]:
        reps = s["throughput_reps"][str(c)]
        waves, wave_records, plans = [], [], []
        for w in range(reps):
            row, recs = await deliberation_wave(client, c, w)
            plan = matched(recs, row["wall_s"])
            row["matched"] = plan.as_dict()
            waves.append(row)
            wave_records.append(recs)
            plans.append(plan)
            print(f"{c} concurrent deliberations, wave {w + 1}: {row}", flush=True)
        raw = []
        for w, plan in enumerate(plans):  # wave w's calls come from deliberation wave w's records
            row = await engine_wave(engine, raw_calls(wave_records[w], plan, councils), plan.concurrency)
            raw.append(row)
            print(f"engine, {plan.calls} generate calls, at most {plan.concurrency} in flight (the deliberations' "
                  f"mean {plan.in_flight:.2f}), wave {w + 1}: {row}", flush=True)
        delib_tps = median([r["tokens_per_s"] for r in waves])
        engine_tps = median([r["tokens_per_s"] for r in raw])
        out[str(c)] = {
            "deliberation_waves": waves, "engine_waves": raw,
            "engine_concurrent_calls": median([p.concurrency for p in plans]),
            "engine_calls": median([p.calls for p in plans]),
            "deliberations_per_min": median([r["deliberations_per_min"] for r in waves]),
            "deliberations_per_hour": median([r["deliberations_per_hour"] for r in waves]),
            "tokens_per_s": delib_tps, "engine_tokens_per_s": engine_tps,
            "ratio_to_engine": round(delib_tps / engine_tps, 3) if engine_tps else None,
        }
    return {"councils": specs, "shape": shape, "baseline": "matched", "results": out}


# ---------------------------------------------------------------- the phase


PARTS = ("paths", "idle", "throughput", "restore")


async def run(ports: dict[str, int], url: str, data: Path, launcher_pid: int, peer_port: int, stop_peer,
              parts: tuple[str, ...] = PARTS) -> dict:
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

            from councils_local.valkey_server import GCS_PASSWORD_FILE, GCS_USER, stored_password

            # make run's Valkey has ACL users; the restore benchmark writes under prefixes of its own, which the
            # councils user may not touch: the benchmark (an operator's tool) uses the gcs user.
            password = stored_password(data / "valkey", GCS_PASSWORD_FILE)
            valkey_url = f"redis://{GCS_USER}:{password}@127.0.0.1:{ports['valkey']}/0"
            sync = valkey_sync.from_url(valkey_url, decode_responses=True)
            actor = sync.get("councils:engine:smollm2:actor") or engine_actor_name("smollm2")
            sync.close()
            engine = ray.get_actor(actor, namespace="councils")

            async def resolve(_name: str) -> list[str]:
                return [actor]

            if "paths" in parts:
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
            if "idle" in parts:
                out["idle_cpu"] = await idle_cpu(launcher_pid)
            if "throughput" in parts:
                out["throughput"] = await throughput(client, engine)
            if "restore" in parts:
                out["restore"] = await restore(valkey_url)
        finally:
            ray.shutdown()  # disconnects this driver only; the cluster is the launcher's to stop
    return out


def main() -> None:
    import argparse

    from .peer_server import start_server, stop_server, wait_ready

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                    help="what to measure (default: all); a partial run is saved as stack_<parts>.json, so the "
                         "page (which reads stack.json) keeps the last whole run")
    args = ap.parse_args()
    parts = tuple(args.parts)
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
            out = asyncio.run(run(ports, url, data, proc.pid, ports["peer"], lambda: stop_server(server), parts))
            out["stack_ready_s"] = ready_s
            out["peer_server_command"] = [Path(c).name if c == sys.executable else c for c in server_cmd]
        finally:
            stop_server(server)
            stop_launcher(proc)
    name = "stack" if parts == PARTS else "stack_" + "_".join(parts)
    print(f"wrote {save_run(name, out)}")


if __name__ == "__main__":
    main()
