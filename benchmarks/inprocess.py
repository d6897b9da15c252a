"""Phase 1 of `make bench`: everything that runs on one in-process vLLM engine (no Ray, no HTTP).

One engine load (~45 s on 2 cores), shared by:
  fan-out      the propose stage for N = 1, 3, 5 agents (benchmarks/propose_fanout.py),
  deliberation the benchmark council's full deliberation, called in-process: the in-process side of
               the Serve-overhead comparison and the "this council" side of the baselines.
(Quality is its own phase, benchmarks/quality.py, with its own engine and doc.)
The engine is `make run`'s (configs/local.yaml: SmolLM2-135M-Instruct, prefix caching on).

    python -m benchmarks.inprocess        # writes benchmarks/results/runs/inprocess.json
"""

from __future__ import annotations

import asyncio
import time

from . import propose_fanout
from .common import (TASKS, WARMUP_TASK, EngineGenerator, bench_council, bench_engine_spec, bench_request,
                     machine_lock, median, save_run, settings, timed_deliberation)


async def deliberations(gen, reps: int) -> list[dict]:
    council = bench_council()
    await timed_deliberation(gen, council, bench_request(WARMUP_TASK))  # warm-up, not timed
    rows = []
    for i in range(reps):
        row = await timed_deliberation(gen, council, bench_request(TASKS[i % len(TASKS)]))
        print(f"in-process deliberation {i + 1}: {row['wall_s']:.2f}s, {row['completion_tokens']} tokens", flush=True)
        rows.append(row)
    return rows


async def run() -> dict:
    from actors.engine import Engine

    s = settings()
    spec = bench_engine_spec()
    engine = Engine(spec)
    t0 = time.perf_counter()
    await engine.start()
    load_s = round(time.perf_counter() - t0, 1)
    print(f"engine loaded in {load_s}s", flush=True)
    gen = EngineGenerator(engine)
    out: dict = {"engine": spec.model_dump(), "engine_load_s": load_s}
    try:
        fanout = await propose_fanout.measure(gen, s["fanout_agents"], s["fanout_max_tokens"], s["fanout_reps"])
        out["fanout"] = {"max_tokens": s["fanout_max_tokens"], "reps": s["fanout_reps"],
                         "results": {str(k): v for k, v in fanout.items()}}
        rows = await deliberations(gen, s["overhead_reps"])
        out["deliberation"] = {"council": bench_council().model_dump(mode="json"), "rows": rows,
                               "median_wall_s": median([r["wall_s"] for r in rows])}
    finally:
        await engine.shutdown()
    return out


def main() -> None:
    with machine_lock():
        out = asyncio.run(run())
    print(f"wrote {save_run('inprocess', out)}")


if __name__ == "__main__":
    main()
