"""The engine: one model behind an async `generate`, shared by every agent of every council.

`Engine` is a plain class (no Ray import) so tests and scripts use it directly; the Ray side hosts
it as a detached named actor with the options from `actors.engine_hosting.engine_actor_options` (see
its docstring for why each option and environment variable is there).

Backends (actors/backends/)
- ``vllm``: vLLM's v1 `AsyncLLM` in this process, batching every concurrent call (backends/vllm.py).
- ``openai``: an OpenAI-compatible HTTP server (e.g. an external `vllm serve`), via `openai.AsyncOpenAI`
  (backends/openai.py).

The model value ``dev:smollm2`` resolves to the locally converted SmolLM2-135M-Instruct
(`actors.model_prep.resolve_model`), so configs need no machine-specific path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from .backends.base import Backend, EngineUnavailable
from .backends.openai import OpenAIBackend
from .backends.vllm import VllmBackend
from .models.councils import EngineSpec

log = logging.getLogger(__name__)


def make_backend(spec: EngineSpec) -> Backend:
    return OpenAIBackend(spec) if spec.backend == "openai" else VllmBackend(spec)


class Engine:
    """One model; `generate` is safe to call concurrently (that is how batching happens)."""

    def __init__(self, spec: EngineSpec | dict[str, Any]):
        self._spec = spec if isinstance(spec, EngineSpec) else EngineSpec.model_validate(spec)
        self._backend: Backend | None = None
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

    async def load(self) -> int:
        """Calls in flight: councils send a new deliberation to the replica with the fewest."""
        return self._in_flight

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
                    backend = make_backend(self._spec)
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
            "node_id": _node_id(),
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
            if backend.dead and self._backend is backend:
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


def _node_id() -> str | None:
    """The Ray node this engine runs on (replicas are spread over nodes), None outside Ray."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # pragma: no cover - status must answer whatever happens
        return None
