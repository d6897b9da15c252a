"""In-memory stand-ins for the Valkey store and the actor registry, so the real CouncilService and the real routes
run in-process (FastAPI's TestClient) with no Valkey and no Ray: tests/test_routes.py."""

from __future__ import annotations

import secrets
import time

from actors.engine_hosting import engine_actor_name, replica_actor_names
from actors.models.config import AppConfig
from actors.models.councils import CouncilSpec, EngineSpec, default_council
from actors.models.records import DeliberationRecord
from actors.store import CouncilBusy, RegistryFull
from serve_app.api import build_api
from serve_app.service import CouncilService


class MemoryStore:
    """The part of actors.store.Store the service uses, in dicts."""

    def __init__(self, engines=("fake",), record_ttl_s: int = 3600):
        self.councils: dict[str, CouncilSpec] = {}
        self.engines = [EngineSpec(name=n, model="m") for n in engines]
        self.records: dict[str, DeliberationRecord] = {}
        self.events: dict[str, list[tuple[str, str, dict]]] = {}
        self.record_ttl_s = record_ttl_s

    async def ping(self) -> bool:
        return True

    async def shared_secret(self, name: str) -> str:
        return self.__dict__.setdefault(f"secret:{name}", secrets.token_hex(32))

    async def get_council(self, role: str) -> CouncilSpec | None:
        return self.councils.get(role)

    async def list_councils(self) -> list[CouncilSpec]:
        return [self.councils[r] for r in sorted(self.councils)]

    async def list_engines(self) -> list[EngineSpec]:
        return list(self.engines)

    async def engine_replicas(self, name: str) -> list[str]:
        spec = next(e for e in self.engines if e.name == name)
        return replica_actor_names(engine_actor_name(name), spec.replicas)

    async def put_council(self, spec: CouncilSpec) -> tuple[CouncilSpec, bool]:
        old = self.councils.get(spec.role)
        now = time.time()
        stored = spec.model_copy(update={"version": old.version + 1 if old else 1,
                                         "created_at": old.created_at if old else now, "updated_at": now})
        self.councils[spec.role] = stored
        return stored, old is None

    async def put_council_capped(self, spec: CouncilSpec, max_councils: int, max_agents_total: int):
        if spec.role not in self.councils and len(self.councils) >= max_councils:
            raise RegistryFull("max_councils", len(self.councils) + 1, max_councils)
        return await self.put_council(spec)

    async def delete_council(self, role: str, reason: str = "council deleted") -> bool:
        return self.councils.pop(role, None) is not None

    async def create_record(self, record: DeliberationRecord, max_active: int | None = None,
                            max_active_total: int | None = None):
        if record.id in self.records:
            return self.records[record.id], False
        active = sum(1 for r in self.records.values() if r.request.role == record.request.role and not r.finished)
        if max_active and active >= max_active:
            raise CouncilBusy(record.request.role, active)
        self.records[record.id] = record
        return record, True

    async def get_record(self, delib_id: str) -> DeliberationRecord | None:
        return self.records.get(delib_id)

    async def read_events(self, delib_id: str, after: str = "0-0", block_ms: int | None = None, count: int = 100):
        return [e for e in self.events.get(delib_id, []) if e[0] > after]

    async def get_event(self, delib_id: str, entry_id: str):
        return next((e for e in self.events.get(delib_id, []) if e[0] == entry_id), None)

    async def get_orchestration(self, delib_id: str):
        return None

    async def stats(self) -> dict[str, int]:
        return {}

    async def durations(self, role: str) -> list[float]:
        return [sample["s"] for sample in await self.duration_samples(role)]

    async def duration_samples(self, role: str) -> list[dict]:
        return [{"s": 3.0, "stages": [["propose", 2.0], ["critique", 0.5], ["critique", 0.7]]}]

    async def active_count(self, role: str) -> int:
        return 0


class MemoryCouncilCalls:
    """serve_app.registry.CouncilCalls in memory: each call is recorded as ("<ROLE>.<method>", args) and answers
    at once; submit goes through the registry's `submitted` (a test's registry may run the deliberation there)."""

    def __init__(self, registry: "MemoryRegistry", role: str):
        self.registry, self.role = registry, role

    async def submit(self, delib_id: str):
        self.registry.calls.append((f"{self.role}.submit", (delib_id,)))
        return await self.registry.submitted(self.role, delib_id)

    async def reload(self):
        self.registry.calls.append((f"{self.role}.reload", ()))

    async def info(self):
        self.registry.calls.append((f"{self.role}.info", ()))

    async def orchestrate(self, delib_id: str, top_k: int):
        self.registry.calls.append((f"{self.role}.orchestrate", (delib_id, top_k)))


class MemoryRegistry:
    """Council calls that are recorded (submit, reload, ...) and answer at once."""

    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []
        self.record_ttl_s = 3600

    def council_calls(self, role: str) -> MemoryCouncilCalls:
        return MemoryCouncilCalls(self, role)

    async def submitted(self, role: str, delib_id: str):
        """What a submit does beyond being recorded: nothing here."""
        return None

    async def remove_council(self, role: str, reason: str = "council deleted") -> None:
        self.calls.append((f"{role}.remove", (reason,)))

    def named(self, actor_name: str):
        return None  # no engine actors here: /v1/status shows each replica as not alive


def memory_service(roles=("DEV", "QA"), config: dict | None = None) -> CouncilService:
    """The real service over the in-memory store, with councils of 3 agents on the engine `fake`."""
    store = MemoryStore()
    for role in roles:
        store.councils[role] = default_council(role, "fake").model_copy(update={"created_at": 1.0, "updated_at": 1.0})
    app_config = AppConfig.model_validate({"engines": [{"name": "fake", "model": "m"}],
                                           "default_councils": {"engine": "fake"}, **(config or {})})
    return CouncilService(app_config, store, MemoryRegistry(), http_host="127.0.0.1", app_name=lambda: "councils")


def memory_app(service: CouncilService | None = None):
    return build_api(service or memory_service())
