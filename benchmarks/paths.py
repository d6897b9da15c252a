"""The service path against its peers, interleaved task by task in one run (part of the `stack` phase).

Five ways to run the same deliberation (same protocol, council spec, request, max_tokens, model and settings):
  service      POST /v1/deliberations?wait=true on the `make run` stack: Serve proxy, ingress replica, council
               actor (a Valkey checkpoint and events after every stage), the stack's engine actor. The path users take.
  engine_actor this driver runs the protocol itself on the stack's engine actor (RayEngineGenerator, as a council
               actor calls it): no Serve, no council actor, no Valkey.
  bare         this driver runs the protocol on an AsyncLLM in its own process (the engine without Ray).
  concurrent   a vLLM OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server`), each stage's calls
               sent at once over HTTP: the simplest peer (a script in the llm-council style).
  original     the same server, one call after another: the design this project replaces.

Repetition i runs every path on task i, in an order rotated by i, so every path sees the same tasks, load and
drift. The long-context variant gives every task a ~1,500-token source file (`constraints.context`) and reads
the prefix-cache hit rate of each stage from the engines' own per-request counts (vLLM's num_cached_tokens).
"""

from __future__ import annotations

import time

import httpx

from .common import (BENCH_ROLE, ROOT, TASKS, WARMUP_TASK, SequentialGenerator, bench_council, bench_request,
                     settings, timed_deliberation)
from .shapes import council_shape

PATHS = ["service", "engine_actor", "bare", "concurrent", "original"]
LONG_PATHS = ["service", "bare", "concurrent"]  # the original design is left out: ~3x longer, nothing new to learn
LONG_CONTEXT_TOKENS = 1500
# Source files of this repository the long-context tasks review, one per repetition.
LONG_FILES = ["actors/scoring.py", "actors/store/records.py", "serve_app/service.py", "actors/engine_client.py",
              "actors/council.py"]
LONG_TASK = "Review the module in the context: name its most serious defect and show the fix as code."


def _stages(timings: list[dict]) -> dict[str, dict]:
    """Each generating stage's timing (actors/models/records.py StageTiming): where the time and tokens went."""
    keys = ("seconds", "generation_s", "verification_s", "checkpoint_s", "prompt_tokens", "cached_prompt_tokens",
            "completion_tokens")
    return {t["stage"]: {k: round(t[k], 3) if isinstance(t[k], float) else t[k] for k in keys}
            for t in timings if t.get("calls")}


async def post_wait(client: httpx.AsyncClient, request) -> tuple[float, dict]:
    """POST /v1/deliberations?wait=true: the wall time and the completed record (anything else stops the run)."""
    t0 = time.perf_counter()
    resp = await client.post("/v1/deliberations", params={"wait": "true"},
                             json=request.model_dump(mode="json", exclude_none=True))
    wall = time.perf_counter() - t0
    if resp.status_code != 200 or resp.json().get("status") != "completed":
        raise RuntimeError(f"deliberation failed: {resp.status_code} {resp.text[:500]}")
    return wall, resp.json()


async def service_once(client: httpx.AsyncClient, request) -> dict:
    wall, record = await post_wait(client, request)
    result = record["result"]
    return {"wall_s": round(wall, 3), "council_duration_s": round(result["duration_s"], 3),
            "completion_tokens": result["usage"]["completion_tokens"],
            "prompt_tokens": result["usage"]["prompt_tokens"], "stages": _stages(record["timings"])}


class Paths:
    """The five ways to deliberate; `run(name, request)` times one deliberation on one of them."""

    def __init__(self, client: httpx.AsyncClient, engine_actor, bare, peer):
        self.client = client
        self.gens = {"engine_actor": engine_actor, "bare": bare, "concurrent": peer,
                     "original": SequentialGenerator(peer)}

    async def run(self, name: str, request, council) -> dict:
        if name == "service":
            return await service_once(self.client, request)
        row = await timed_deliberation(self.gens[name], council, request)
        row["stages"] = _stages(row.pop("timings"))
        return row


async def put_bench_council(client: httpx.AsyncClient, council) -> None:
    resp = await client.put(f"/v1/councils/{BENCH_ROLE}",
                            json=council.model_dump(mode="json", include={"agents", "rounds", "scoring"}))
    assert resp.status_code in (200, 201), resp.text


async def interleaved(paths: Paths, names: list[str], requests: list, label: str) -> dict:
    """Every path on every request; request i in the order of `names` rotated by i."""
    council = bench_council()
    rows: dict[str, list[dict]] = {n: [] for n in names}
    for i, request in enumerate(requests):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            rows[name].append(await paths.run(name, request, council))
        print(f"{label} {i + 1}: " + ", ".join(f"{n} {rows[n][-1]['wall_s']:.2f}s" for n in names), flush=True)
    return {"order": names, "rows": rows}


def long_context(tokenizer, path: str, tokens: int = LONG_CONTEXT_TOKENS) -> str:
    """The first `tokens` tokens of a source file of this repository (the model's own tokenizer)."""
    ids = tokenizer.encode((ROOT / path).read_text(), add_special_tokens=False)[:tokens]
    return tokenizer.decode(ids)


def long_request(tokenizer, i: int):
    request = bench_request(LONG_TASK)
    request.constraints.context = long_context(tokenizer, LONG_FILES[i % len(LONG_FILES)])
    return request


async def compare(paths: Paths) -> dict:
    """The short tasks on all five paths, then the long-context tasks on the service, the bare engine and the
    concurrent peer; one untimed warm-up of every path first."""
    from transformers import AutoTokenizer

    from actors.model_prep import ensure_dev_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_dev_model())
    s = settings()
    await put_bench_council(paths.client, bench_council())
    for name in PATHS:
        await paths.run(name, bench_request(WARMUP_TASK), bench_council())
    short = [bench_request(TASKS[i % len(TASKS)]) for i in range(s["overhead_reps"])]
    out = {"short": await interleaved(paths, PATHS, short, "deliberation")}
    out["short"]["shape"] = council_shape(bench_council(), short[0])
    long = [long_request(tokenizer, i) for i in range(s["long_context_reps"])]
    out["long"] = await interleaved(paths, LONG_PATHS, long, "long-context deliberation")
    out["long"]["shape"] = council_shape(bench_council(), long[0])
    out["long"]["context_tokens"] = LONG_CONTEXT_TOKENS
    out["long"]["files"] = [LONG_FILES[i % len(LONG_FILES)] for i in range(len(long))]
    return out
