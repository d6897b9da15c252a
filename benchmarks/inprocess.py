"""Phase 1 of `make bench`: the propose-stage fan-out on one in-process vLLM engine (no Ray, no HTTP).

One engine load (~45 s on 2 cores); the propose stage for N = 1, 3, 5 agents (benchmarks/propose_fanout.py) at
each budget of settings()["fanout_max_tokens"]: the deliberations' own (32 tokens per generation) and a longer
answer (128). The engine is `make run`'s (configs/local.yaml: SmolLM2-135M-Instruct, prefix caching on).
(The deliberation on a bare engine runs in the `stack` phase, interleaved with the other paths: benchmarks/paths.py.)

    python -m benchmarks.inprocess        # writes benchmarks/results/runs/inprocess.json
"""

from __future__ import annotations

import asyncio
import time

from . import propose_fanout
from .common import EngineGenerator, bench_engine_spec, machine_lock, save_run, settings


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
    out: dict = {"engine": spec.model_dump(), "engine_load_s": load_s, "fanout": {}}
    try:
        for max_tokens in s["fanout_max_tokens"]:
            fanout = await propose_fanout.measure(gen, s["fanout_agents"], max_tokens, s["fanout_reps"])
            out["fanout"][str(max_tokens)] = {"max_tokens": max_tokens, "reps": s["fanout_reps"],
                                              "shape": propose_fanout.shape(s["fanout_agents"], max_tokens),
                                              "results": {str(k): v for k, v in fanout.items()}}
    finally:
        await engine.shutdown()
    return out


def main() -> None:
    with machine_lock():
        out = asyncio.run(run())
    print(f"wrote {save_run('inprocess', out)}")


if __name__ == "__main__":
    main()
