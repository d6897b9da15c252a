"""actors/engine_client.py: a deliberation's calls stay on one engine replica, deliberations spread by load, and a
replica that fails moves its calls to the others. Fake actor handles, no Ray."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError

from actors.backends.base import EngineUnavailable
from actors.engine_client import AFFINITY, RayEngineGenerator

pytestmark = pytest.mark.unit

REPLICAS = ["engine-e", "engine-e@1"]


class Method:
    def __init__(self, fn):
        self.remote = fn  # handle.method.remote(...) returns an awaitable, like an ObjectRef


class Replica:
    """A fake engine actor handle: generate and load, each through `.remote(...)`."""

    def __init__(self, name: str, delay_s: float = 0.0):
        self.name, self.delay_s, self.calls, self.dead, self.in_flight = name, delay_s, [], False, 0
        self.generate, self.load = Method(self._generate), Method(self._load)

    def _generate(self, messages, **kwargs):
        self.calls.append(messages[-1]["content"])
        return self._answer()

    async def _answer(self):
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay_s)
            if self.dead:
                raise ActorDiedError()
            return {"text": self.name, "prompt_tokens": 1, "completion_tokens": 1}
        finally:
            self.in_flight -= 1

    async def _load(self):
        if self.dead:
            raise ActorDiedError()
        return self.in_flight


def client(replicas: dict[str, Replica], max_wait_s: float = 600.0) -> RayEngineGenerator:
    async def resolve(engine: str) -> list[str]:
        return list(replicas)

    return RayEngineGenerator(resolve=resolve, get_actor=lambda name: replicas[name], max_wait_s=max_wait_s)


async def deliberation(gen: RayEngineGenerator, delib_id: str, calls: int = 3) -> list[str]:
    """Run in its own task, as the council runs each deliberation: AFFINITY is that task's."""
    async def run():
        AFFINITY.set(delib_id)
        return [(await gen.generate("e", [{"role": "user", "content": f"{delib_id}-{i}"}], temperature=0,
                                    max_tokens=8, seed=None)).text for i in range(calls)]

    return await asyncio.create_task(run())


async def test_a_deliberations_calls_stay_on_one_replica_and_new_ones_go_to_the_least_loaded():
    replicas = {n: Replica(n, delay_s=0.05) for n in REPLICAS}
    gen = client(replicas)
    busy = replicas["engine-e@1"]
    busy.in_flight = 5  # another council's calls
    answers = await asyncio.gather(*(deliberation(gen, f"d{i}") for i in range(4)))
    assert all(len(set(a)) == 1 for a in answers), answers  # every stage of one deliberation: one replica
    assert [a[0] for a in answers] == ["engine-e"] * 4  # the other replica was busier all along
    busy.in_flight = 0
    spread = await asyncio.gather(*(deliberation(gen, f"e{i}") for i in range(8)))  # equal loads: by the ids' hash
    assert {a[0] for a in spread} == set(REPLICAS)
    gen.release("d0")
    assert not [p for p in gen.pins if p[1] == "d0"] and len(gen.pins) == 11


async def test_a_dead_replica_moves_its_calls_to_the_other_at_once():
    replicas = {n: Replica(n) for n in REPLICAS}
    gen = client(replicas, max_wait_s=0)  # any wait would raise: the move must not wait
    first = await deliberation(gen, "d0", calls=1)
    pinned = first[0]
    other = next(n for n in REPLICAS if n != pinned)
    replicas[pinned].dead = True
    AFFINITY.set("d0")
    out = await gen.generate("e", [{"role": "user", "content": "again"}], temperature=0, max_tokens=8, seed=None)
    assert out.text == other and replicas[pinned].calls[-1] == "again"  # tried there, answered by the other
    assert await deliberation(gen, "d1", calls=2) == [other, other]  # new work avoids the dead replica
    assert gen.why_waiting() == ""  # the engine was never unavailable as a whole


async def test_with_every_replica_dead_the_call_waits_and_then_fails_naming_the_engine():
    replicas = {n: Replica(n) for n in REPLICAS}
    for r in replicas.values():
        r.dead = True
    gen = client(replicas, max_wait_s=0.5)
    with pytest.raises(EngineUnavailable, match="engine 'e'"):
        await deliberation(gen, "d0", calls=1)
    assert all(r.calls for r in replicas.values())  # each replica was tried


async def test_waits_back_off_and_every_replica_is_tried_again_after_each(caplog):
    replicas = {n: Replica(n) for n in REPLICAS}
    for r in replicas.values():
        r.dead = True
    gen = client(replicas, max_wait_s=1.5)
    with caplog.at_level("WARNING", logger="councils.engine_client"), pytest.raises(EngineUnavailable):
        await deliberation(gen, "d0", calls=1)
    waits = [r.getMessage().rpartition("retrying in ")[2] for r in caplog.records if "retrying in" in r.getMessage()]
    assert waits == ["0.5s", "1.0s"]  # 0.5 s doubling; given up once 1.5 s were waited
    assert [len(r.calls) for r in replicas.values()] == [3, 3]  # each attempt moved through both replicas


async def test_one_replica_waits_for_the_engine_to_come_back():
    replica = Replica("engine-e")
    replica.dead = True
    gen = client({"engine-e": replica})

    async def revive():
        await asyncio.sleep(0.3)
        replica.dead = False

    asyncio.create_task(revive())
    assert await deliberation(gen, "d0", calls=1) == ["engine-e"]
    assert len(replica.calls) >= 2


def test_replica_actor_names_and_options():
    from actors.engine_hosting import engine_actor_options, is_engine_actor, replica_actor_names
    from actors.models.councils import EngineSpec

    assert replica_actor_names("engine-e", 1) == ["engine-e"]
    assert replica_actor_names("engine-e.1a2b", 3) == ["engine-e.1a2b", "engine-e.1a2b@1", "engine-e.1a2b@2"]
    assert is_engine_actor("engine-e.1a2b@2", "e") and not is_engine_actor("engine-ex@1", "e")
    one = engine_actor_options(EngineSpec(name="e", model="m"))
    assert "scheduling_strategy" not in one and one["max_task_retries"] == 2
    spread = engine_actor_options(EngineSpec(name="e", model="m", replicas=2))
    assert spread["scheduling_strategy"] == "SPREAD" and spread["max_task_retries"] == 0
