"""How a council reaches its engines: by actor name, waiting out an engine that is restarting."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from .backends.base import EngineUnavailable
from .engine_hosting import engine_actor_name
from .models.records import Completion

log = logging.getLogger("councils.engine_client")


class RayEngineGenerator:
    """The protocol's Generator over named engine actors (`engine-<name>`)."""

    def __init__(self, namespace: str = "councils", max_wait_s: float = 600.0,
                 resolve: Callable[[str], Awaitable[str]] | None = None):
        self.namespace = namespace
        self.max_wait_s = max_wait_s  # the request's own deadline usually cuts this shorter
        self.handles: dict[str, ray.actor.ActorHandle] = {}
        # Engines being waited for right now, with the last error: a timeout can then say why.
        self.unavailable: dict[str, str] = {}
        # engine name -> name of the actor serving it now (it changes when a new spec rolls the engine
        # over to a new actor); default: `engine-<name>`.
        self.resolve = resolve

    def forget(self) -> None:
        """Drop cached handles: the next call resolves every engine's actor again."""
        self.handles.clear()

    async def _handle(self, engine: str):
        if engine not in self.handles:
            actor = await self.resolve(engine) if self.resolve else engine_actor_name(engine)
            self.handles[engine] = ray.get_actor(actor, namespace=self.namespace)
        return self.handles[engine]

    def why_waiting(self) -> str:
        """'' or a sentence naming the engines that are unavailable and their last error."""
        if not self.unavailable:
            return ""
        return "; waiting for unavailable engine(s): " + "; ".join(f"{e} ({m})" for e, m in self.unavailable.items())

    async def generate(self, engine, messages, *, temperature, max_tokens, seed, json_schema=None) -> Completion:
        delay, waited = 0.5, 0.0
        while True:
            try:
                try:
                    handle = await self._handle(engine)
                except ValueError as exc:  # no actor of that name (yet)
                    raise ActorUnavailableError(str(exc), None) from exc
                out = await handle.generate.remote(
                    messages, temperature=temperature, max_tokens=max_tokens, seed=seed, json_schema=json_schema
                )
                self.unavailable.pop(engine, None)
                return Completion.model_validate(out)
            except (ActorDiedError, ActorUnavailableError, RayActorError, EngineUnavailable) as exc:
                # The actor is dead or restarting, or its model is (re)loading: wait, within the deadline.
                self.handles.pop(engine, None)
                self.unavailable[engine] = f"{type(exc).__name__}: {str(exc)[:300]}"
                if waited >= self.max_wait_s:
                    raise EngineUnavailable(f"engine {engine!r}: {type(exc).__name__}: {exc}") from exc
                log.warning("engine %s unavailable (%s); retrying in %.1fs", engine, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)
