"""The vLLM backend: vLLM's v1 `AsyncLLM` in this process (its engine core runs in a child process it spawns).

Concurrent `generate` calls are simply concurrent requests on the one AsyncLLM, which batches them step by step
(continuous batching), so a council's fan-out is one batched run. vLLM is imported only inside the methods.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from ..engine_hosting import cpu_engine_env
from ..model_prep import resolve_model
from ..models.councils import EngineSpec
from ..models.records import Completion
from .base import EngineError, EngineUnavailable

# How often a generate call in flight checks that the vLLM engine core is still alive.
DEATH_POLL_S = 1.0
# On a CPU node the engine core's model threads are bound to every core and keep them busy while it decodes. The
# councils, the ingress replica and Serve's proxies are Ray workers at niceness 15, as the engine is, so each of
# their short turns (a prompt built, a checkpoint written, an answer relayed) queued behind those threads: the same
# engine calls took 1.65 s longer per deliberation from the council actor than from a driver at niceness 0
# (docs/benchmarks.md). At this niceness the engine core yields to them at once and still gets every cycle they
# leave. GPU engines are left as they are: their engine core mostly waits for the device.
CPU_ENGINE_CORE_NICENESS = 19


def is_cpu_platform() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # pragma: no cover - vllm missing or broken
        return False


def _children() -> list:
    import psutil

    return psutil.Process().children(recursive=True)


def raise_niceness(processes: list, niceness: int) -> None:
    """Raise these processes' niceness (psutil.Process: the engine core AsyncLLM spawned) to `niceness`; never lower
    it. Any user may raise the niceness of their own processes; a process that is gone or refuses is left as is."""
    import psutil

    for proc in processes:
        try:
            if proc.nice() < niceness:
                proc.nice(niceness)
        except psutil.Error:
            pass


class VllmBackend:
    """One AsyncLLM; `dead` once its engine core died (the Engine then starts a fresh one)."""

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
        cpu = is_cpu_platform()
        if cpu:
            for key, value in cpu_engine_env().items():
                os.environ.setdefault(key, value)
        from vllm.v1.engine.async_llm import AsyncLLM

        args = self.engine_args(self.model_path, cpu)
        # Building the engine loads weights in the engine-core process and blocks meanwhile.
        before = {p.pid for p in _children()}
        self.llm = await loop.run_in_executor(None, lambda: AsyncLLM.from_engine_args(args))
        if cpu:  # only what this start spawned: a driver hosting an engine may have other children (a whole stack)
            raise_niceness([p for p in _children() if p.pid not in before], CPU_ENGINE_CORE_NICENESS)
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

    def _gone(self, llm: Any) -> bool:
        """The engine a call started on died, or was shut down (and maybe replaced) since."""
        return self.llm is not llm or bool(getattr(llm, "errored", False))

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

        # This call's engine: another call that saw the engine core die may shut it down (self.llm = None)
        # while this one is still preparing or waiting; it must then fail as unavailable, not as a bug.
        llm = self.llm
        if llm is None:
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
        renderer = getattr(llm, "renderer", None)
        if renderer is not None and hasattr(renderer, "render_cmpl_async"):
            # vLLM 0.32 deprecates raw prompts in generate(); hand it a rendered engine input.
            (prompt,) = await renderer.render_cmpl_async([prompt])
        final = None

        async def collect() -> None:
            nonlocal final
            async for out in llm.generate(prompt, params, request_id):
                final = out

        # A request in flight when the engine core dies may never get an answer (vLLM cleans up its client but
        # does not always fail the pending requests): watch for the death and fail the call, so the caller's
        # retry reaches a new engine core (tests/test_e2e_make_run.py kills the real one).
        work = asyncio.ensure_future(collect())
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=DEATH_POLL_S)
                if not work.done() and self._gone(llm):
                    raise EngineDeadError("engine core died with the request in flight")
            work.result()
        except EngineDeadError as exc:
            raise EngineUnavailable(f"vLLM engine {self.spec.name!r} is dead: {exc}") from exc
        except (Exception, asyncio.CancelledError) as exc:
            # Whatever the dying or shut-down engine raised (its stream may end cancelled), unless this call
            # itself is being cancelled.
            task = asyncio.current_task()
            if self._gone(llm) and not (task is not None and task.cancelling()):
                raise EngineUnavailable(f"vLLM engine {self.spec.name!r} went away during the call: "
                                        f"{type(exc).__name__}: {exc}") from exc
            raise
        finally:
            work.cancel()
        if final is None or not final.outputs:
            raise EngineError(f"vLLM returned no output for request {request_id}")
        choice = final.outputs[0]
        return Completion(
            text=choice.text,
            prompt_tokens=len(final.prompt_token_ids or ids),
            cached_tokens=int(getattr(final, "num_cached_tokens", 0) or 0),
            completion_tokens=len(choice.token_ids),
            finish_reason=choice.finish_reason,
        )
