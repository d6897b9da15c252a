"""How a council reaches its engines: by actor name, one replica per deliberation, waiting out an engine that is
restarting and moving off a replica that is gone.

An engine has one actor per replica (EngineSpec.replicas; names in actors/engine_hosting.py). Every call made
for one deliberation goes to the same replica, so its stages reuse that replica's prefix cache: the council sets
AFFINITY to the deliberation's id in the task that runs it. A deliberation's first call picks the replica with
the fewest calls in flight (each replica's `load()`, from every council; ties spread by the id's hash). A replica that fails a call
(dead, restarting, its node gone, its model reloading) is avoided for REPLICA_AVOID_S and the call moves to
another replica at once; with no other replica the call waits for it, as with one engine actor.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from contextvars import ContextVar
from typing import Awaitable, Callable

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from .backends.base import EngineUnavailable
from .engine_hosting import engine_actor_name
from .models.records import Completion

log = logging.getLogger("councils.engine_client")

# The deliberation the running task generates for (set by the council actor in that task's context).
AFFINITY: ContextVar[str | None] = ContextVar("councils_engine_affinity", default=None)
REPLICA_AVOID_S = 30.0  # how long a replica that failed a call gets no new calls while another is up
LOAD_TIMEOUT_S = 2.0  # a replica's load() answer; past it the replica counts as full

UNAVAILABLE = (ActorDiedError, ActorUnavailableError, RayActorError, EngineUnavailable)


class RayEngineGenerator:
    """The protocol's Generator over named engine actors (`engine-<name>`, its replicas `engine-<name>@<i>`)."""

    def __init__(self, namespace: str = "councils", max_wait_s: float = 600.0,
                 resolve: Callable[[str], Awaitable[list[str]]] | None = None,
                 get_actor: Callable | None = None):
        self.namespace = namespace
        self.max_wait_s = max_wait_s  # the request's own deadline usually cuts this shorter
        # engine name -> the actors serving it now, replica 0 first (they change when a new spec rolls the engine
        # over); default: `engine-<name>` alone.
        self.resolve = resolve
        self.get_actor = get_actor or (lambda name: ray.get_actor(name, namespace=self.namespace))
        self.replicas: dict[str, list[str]] = {}
        self.handles: dict[str, ray.actor.ActorHandle] = {}  # actor name -> handle
        self.pins: dict[tuple[str, str], str] = {}  # (engine, deliberation id) -> actor name
        self.avoid_until: dict[str, float] = {}  # actor name -> monotonic time
        # Engines being waited for right now, with the last error: a timeout can then say why.
        self.unavailable: dict[str, str] = {}

    def forget(self) -> None:
        """Drop cached replicas and handles: the next call resolves every engine's actors again."""
        self.replicas.clear()
        self.handles.clear()

    def release(self, affinity: str) -> None:
        """The deliberation ended: drop its replica pins."""
        for pin in [p for p in self.pins if p[1] == affinity]:
            del self.pins[pin]

    async def _replica_names(self, engine: str) -> list[str]:
        if engine not in self.replicas:
            self.replicas[engine] = await self.resolve(engine) if self.resolve else [engine_actor_name(engine)]
        return self.replicas[engine]

    async def _actor(self, name: str):
        if name not in self.handles:
            try:
                # A lookup by name asks the GCS, which blocks while the head restarts: not on the event loop.
                self.handles[name] = await asyncio.to_thread(self.get_actor, name)
            except ValueError as exc:  # no actor of that name (yet)
                raise ActorUnavailableError(str(exc), None) from exc
        return self.handles[name]

    async def _load(self, name: str) -> int:
        return await (await self._actor(name)).load.remote()

    async def _remote_load(self, name: str) -> float:
        """The replica's calls in flight, from every council; a replica that does not answer counts as full."""
        try:
            return await asyncio.wait_for(self._load(name), timeout=LOAD_TIMEOUT_S)
        except Exception:
            return float("inf")

    def _up(self, names: list[str]) -> list[str]:
        """The replicas not avoided right now (none failed a call in the last REPLICA_AVOID_S)."""
        now = time.monotonic()
        return [n for n in names if self.avoid_until.get(n, 0) <= now]

    async def _pick(self, engine: str, names: list[str], affinity: str | None) -> str:
        up = self._up(names) or names
        pinned = self.pins.get((engine, affinity)) if affinity else None
        if pinned in up:
            return pinned
        loads = await asyncio.gather(*(self._remote_load(n) for n in up)) if len(up) > 1 else [0]
        spread = int(hashlib.sha1((affinity or "").encode()).hexdigest()[:8], 16)
        _, _, choice = min((load, (names.index(n) - spread) % len(names), n) for n, load in zip(up, loads))
        if affinity:
            self.pins[(engine, affinity)] = choice
        return choice

    def why_waiting(self) -> str:
        """'' or a sentence naming the engines that are unavailable. Their last error stays in the log (it was
        logged when it happened): its text (a remote traceback, a node's address) is not for a record's caller."""
        if not self.unavailable:
            return ""
        return "; waiting for unavailable engine(s): " + ", ".join(sorted(self.unavailable))

    async def generate(self, engine, messages, *, temperature, max_tokens, seed, json_schema=None) -> Completion:
        """One completion from the deliberation's replica (another at once if it fails); with none up, wait
        (0.5 s doubling to 5 s, max_wait_s in all) and try again, then give up with EngineUnavailable."""
        affinity = AFFINITY.get()
        kwargs = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed, "json_schema": json_schema}
        replicas: list[str] = []  # the engine's replicas at the last attempt

        def try_all_again(state: RetryCallState) -> None:
            if state.attempt_number > 1 and len(replicas) > 1:
                self.avoid_until.clear()  # every replica failed, and the wait is over: try them all again

        def waiting(state: RetryCallState) -> None:
            log.warning("engine %s unavailable (%s); retrying in %.1fs", engine,
                        type(state.outcome.exception()).__name__, state.upcoming_sleep)

        retrying = AsyncRetrying(retry=retry_if_exception_type(UNAVAILABLE),
                                 wait=wait_exponential(multiplier=0.5, max=5.0),
                                 stop=lambda state: state.idle_for >= self.max_wait_s,  # time waited, not called
                                 before=try_all_again, before_sleep=waiting, reraise=True)
        try:
            return await retrying(self._generate_on_a_replica, engine, affinity, replicas, messages, kwargs)
        except UNAVAILABLE as exc:
            raise EngineUnavailable(f"engine {engine!r}: {type(exc).__name__}: {exc}") from exc

    async def _generate_on_a_replica(self, engine: str, affinity: str | None, replicas: list[str], messages,
                                     kwargs: dict) -> Completion:
        """One attempt: the picked replica, and at once another that is up each time one fails; what the last
        one raised when none is left up."""
        while True:
            replicas[:] = names = await self._replica_names(engine)
            actor = await self._pick(engine, names, affinity)
            try:
                out = await (await self._actor(actor)).generate.remote(messages, **kwargs)
                self.unavailable.pop(engine, None)
                self.avoid_until.pop(actor, None)
                return Completion.model_validate(out)
            except UNAVAILABLE as exc:
                # The actor is dead or restarting, its node is gone, or its model is (re)loading.
                self.handles.pop(actor, None)
                self.unavailable[engine] = f"{actor}: {type(exc).__name__}: {str(exc)[:300]}"
                log.info("engine %s: %s", engine, self.unavailable[engine])  # the detail: logs only
                self.avoid_until[actor] = time.monotonic() + REPLICA_AVOID_S
                others_up = [n for n in self._up(names) if n != actor]
                if not others_up:
                    raise
                log.warning("engine %s: replica %s unavailable (%s); moving to %s", engine, actor,
                            type(exc).__name__, others_up)
