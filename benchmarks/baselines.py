"""Phase 2 of `make bench`: the designs this project replaces, on a vLLM OpenAI-compatible server.

Starts `python -m vllm.entrypoints.openai.api_server` on the same model with the same settings as
the council's engine (float32, eager, max_model_len 2048, prefix caching on, max_num_seqs 64, the
model's threads bound to every core), then runs the same deliberation protocol, council spec,
requests and max_tokens as phase 1, with the engine reached over HTTP (`EngineSpec(backend="openai")`):
  original    each agent calls the server over HTTP, one after another (propose, critique,
              revise: every call waits for the previous one), as the original orchestrator did;
  concurrent  all agents' calls of a stage go to the server at once (the server batches them).
Both run `reps` times, interleaved. The server is stopped by its process group at the end.

    python -m benchmarks.baselines        # writes benchmarks/results/runs/baselines.json
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import (TASKS, WARMUP_TASK, EngineGenerator, SequentialGenerator, bench_council,
                     bench_engine_spec, bench_request, machine_lock, median, save_run, settings,
                     timed_deliberation)

SERVED_NAME = "smollm2"


def server_command(model_dir: str, port: int, spec) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
            "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", str(spec.max_model_len), "--max-num-seqs", str(spec.max_num_seqs),
            "--dtype", "float32", "--enforce-eager", "--generation-config", "vllm",
            "--enable-prefix-caching" if spec.enable_prefix_caching else "--no-enable-prefix-caching",
            "--disable-log-stats", "--disable-uvicorn-access-log", "--uvicorn-log-level", "warning"]


def start_server(port: int, log_path: Path) -> tuple[subprocess.Popen, list[str]]:
    from actors.engine_hosting import cpu_engine_env
    from actors.model_prep import ensure_dev_model

    spec = bench_engine_spec()
    cmd = server_command(ensure_dev_model(), port, spec)
    # The same process environment the in-process engine gets (KV cache size, offline, thread binding).
    env = {**os.environ, **cpu_engine_env()}
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc, cmd


def stop_server(proc: subprocess.Popen) -> None:
    from councils_local.processes import kill_tree

    if proc.poll() is None:
        kill_tree(proc.pid, 30)  # its process group and every child (the engine core)


def wait_ready(proc: subprocess.Popen, port: int, log_path: Path, timeout_s: float = 600) -> float:
    from councils_local.processes import http_get

    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited ({proc.returncode}); see {log_path}:\n"
                               + log_path.read_text()[-3000:])
        if http_get(f"http://127.0.0.1:{port}/v1/models")[0] == 200:
            return round(time.time() - t0, 1)
        time.sleep(1)
    raise TimeoutError(f"vLLM server not ready in {timeout_s:.0f}s; see {log_path}")


async def run(port: int) -> dict:
    from actors.engine import Engine
    from actors.models.councils import EngineSpec

    s = settings()
    spec = EngineSpec(name="vllm-http", backend="openai", base_url=f"http://127.0.0.1:{port}/v1", model=SERVED_NAME)
    engine = Engine(spec)
    await engine.start()
    concurrent = EngineGenerator(engine)
    original = SequentialGenerator(concurrent)
    council = bench_council()
    try:
        for gen in (original, concurrent):
            await timed_deliberation(gen, council, bench_request(WARMUP_TASK))  # warm-up, not timed
        rows: dict[str, list[dict]] = {"original": [], "concurrent": []}
        for i in range(s["reps"]):
            request = bench_request(TASKS[i % len(TASKS)])
            for name, gen in (("original", original), ("concurrent", concurrent)):
                row = await timed_deliberation(gen, council, request)
                print(f"{name} {i + 1}: {row['wall_s']:.2f}s, {row['completion_tokens']} tokens", flush=True)
                rows[name].append(row)
    finally:
        await engine.shutdown()
    return {name: {"rows": r, "median_wall_s": median([x["wall_s"] for x in r])} for name, r in rows.items()}


def main() -> None:
    from councils_local.valkey_server import free_port

    data = Path(tempfile.mkdtemp(prefix="bench-baselines-"))
    log_path = data / "vllm-server.log"
    with machine_lock():
        port = free_port()
        proc, cmd = start_server(port, log_path)
        try:
            load_s = wait_ready(proc, port, log_path)
            print(f"vLLM server on port {port} ready in {load_s}s", flush=True)
            out = asyncio.run(run(port))
        finally:
            stop_server(proc)
    out.update(server_command=[Path(c).name if c == sys.executable else c for c in cmd], server_load_s=load_s,
               council=bench_council().model_dump(mode="json"))
    print(f"wrote {save_run('baselines', out)}")


if __name__ == "__main__":
    main()
