"""Get-or-create of the named, detached actors: one `council-<ROLE>` per council, one `engine-<name>` per engine.

Every ingress replica may call these at once (start-up reconcile, API writes): `get_if_exists`
makes creation race-free, and the actor names make the result the same whoever wins.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import ray
from ray.exceptions import ActorDiedError

from actors.council import NAMESPACE, RemoteCouncil, council_actor_name, council_actor_options
from actors.engine_hosting import engine_actor_options, is_engine_actor, replica_actor_names
from actors.models.councils import EngineSpec

log = logging.getLogger("councils.registry")


class CouncilCalls:
    """The calls the ingress makes on one council's actor, typed (actors/council.py has the methods), through
    the registry's kept handles (ActorRegistry.call)."""

    def __init__(self, registry: "ActorRegistry", role: str):
        self.registry, self.role = registry, role

    async def submit(self, delib_id: str) -> str:
        """Start (or keep running) a deliberation: "running" or "finished"."""
        return await self.registry.call(self.role, lambda h: h.submit.remote(delib_id))

    async def reload(self) -> int | None:
        """Re-read the spec: its version (None: deleted)."""
        return await self.registry.call(self.role, lambda h: h.reload.remote())

    async def info(self) -> dict[str, Any]:
        """Resume what is unfinished and say what runs."""
        return await self.registry.call(self.role, lambda h: h.info.remote())

    async def orchestrate(self, delib_id: str, top_k: int) -> dict[str, Any]:
        """The architect's choice over a completed deliberation (raises actors.orchestrate.NotOrchestrable)."""
        return await self.registry.call(self.role, lambda h: h.orchestrate.remote(delib_id, top_k))


class ActorRegistry:
    def __init__(self, valkey_url: str, key_prefix: str, record_ttl_s: int, council_max_concurrency: int = 64,
                 verification: dict | None = None):
        self.valkey_url = valkey_url
        self.key_prefix = key_prefix
        self.record_ttl_s = record_ttl_s
        self.council_max_concurrency = council_max_concurrency
        self.verification = verification
        self.councils: dict[str, ray.actor.ActorHandle] = {}  # role -> handle, for call

    def council_calls(self, role: str) -> CouncilCalls:
        """The council's actor, to call (created on first use if it does not exist)."""
        return CouncilCalls(self, role)

    async def call(self, role: str, invoke: Callable[[ray.actor.ActorHandle], Awaitable[Any]]) -> Any:
        """Call the council's actor through a handle kept from an earlier call. Get-or-create asks the
        GCS every time, and while the head restarts that question blocks this replica's event loop; a kept
        handle reaches the actor directly. A handle whose actor is gone for good (the council was deleted, maybe
        created again by another replica) is replaced once by get-or-create."""
        for attempt in range(2):
            handle = self.councils.get(role)
            if handle is None:  # get-or-create asks the GCS: off the event loop
                handle = self.councils[role] = await asyncio.to_thread(self.council, role)
            try:
                return await invoke(handle)
            except ActorDiedError:
                self.councils.pop(role, None)
                if attempt:
                    raise

    def council(self, role: str):
        """The council's actor, created if it does not exist (its spec must already be in Valkey)."""
        return RemoteCouncil.options(**council_actor_options(role, self.council_max_concurrency)).remote(
            role, self.valkey_url, self.key_prefix, self.record_ttl_s, verification=self.verification
        )

    def existing_council(self, role: str):
        try:
            return ray.get_actor(council_actor_name(role), namespace=NAMESPACE)
        except ValueError:
            return None

    def engine(self, spec: EngineSpec, actor_name: str | None = None):
        """The engine's actor (default name `engine-<name>`; a rolled-over engine's actor has its own)."""
        from actors.engine import Engine  # vLLM is imported only where engines run

        options = engine_actor_options(spec)
        if actor_name:
            options["name"] = actor_name
        return ray.remote(Engine).options(**options).remote(spec.model_dump())

    def engine_replicas(self, spec: EngineSpec, actor_name: str):
        """Every replica's actor (EngineSpec.replicas), created if missing; replica 0 is named `actor_name`."""
        return [self.engine(spec, name) for name in replica_actor_names(actor_name, spec.replicas)]

    def engine_actor_names(self) -> list[str]:
        """Names of the live engine actors (`engine-...`) in the councils namespace."""
        return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a.get("namespace") == NAMESPACE and is_engine_actor(a["name"]))

    def named(self, actor_name: str):
        try:
            return ray.get_actor(actor_name, namespace=NAMESPACE)
        except ValueError:
            return None

    def kill(self, handle) -> None:
        ray.kill(handle, no_restart=True)

    async def remove_council(self, role: str, reason: str = "council deleted") -> None:
        self.councils.pop(role, None)
        handle = self.existing_council(role)
        if handle is None:
            return
        try:
            await handle.retire.remote(reason)
        except Exception as exc:  # it is going away anyway; the records were failed by whoever could
            log.warning("retiring council %s: %s", role, exc)
        ray.kill(handle, no_restart=True)
