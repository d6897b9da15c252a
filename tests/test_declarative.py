"""Declarative deploys (serve_app/declarative.py) and live settings, in-process against the real Valkey."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from actors.models.config import AppConfig, RuntimeSettings
from actors.engine_hosting import replica_actor_names
from actors.models.councils import EngineSpec, default_council
from actors.models.requests import DeliberationRequest
from serve_app import declarative
from serve_app.declarative import apply_config, retire_engine_actor, roll_engine, rolled_actor_name
from serve_app.errors import ApiError
from serve_app.validation import resolve_request

pytestmark = pytest.mark.valkey

ROLES = ["DEV", "QA", "ARCHITECT", "DEVOPS", "DATA"]
SEC = {"role": "SEC", "agents": [{"id": "sec-1", "engine": "fake"}, {"id": "sec-2", "engine": "fake"}], "rounds": 1}


def config(**over) -> AppConfig:
    base = {"engines": [{"name": "fake", "model": "test-engine"}],
            "default_councils": {"engine": "fake", "agents_per_council": 3, "rounds": 1, "max_tokens": 32}}
    return AppConfig.model_validate({**base, **over})


async def versions(store) -> dict[str, int]:
    return {c.role: c.version for c in await store.list_councils()}


async def test_first_deploy_creates_engines_and_default_councils(store):
    applied = await apply_config(store, config(), stamp=1.0)
    assert not applied.stale and applied.engines_added == ["fake"] and applied.engines_changed == []
    assert sorted(applied.defaults_created) == sorted(ROLES) == applied.councils_changed
    assert await versions(store) == {r: 1 for r in ROLES}
    # The same config again (another replica, a scale-up): nothing changes.
    again = await apply_config(store, config(), stamp=1.0)
    assert again.councils_changed == [] and again.engines_added == [] and again.pruned == []
    assert await versions(store) == {r: 1 for r in ROLES}


async def test_declared_councils_replace_the_defaults_on_an_empty_registry(store):
    applied = await apply_config(store, config(councils=[SEC]), stamp=1.0)
    assert applied.councils == {"SEC": "created"} and applied.defaults_created == []
    assert await versions(store) == {"SEC": 1}
    assert [a.id for a in (await store.get_council("SEC")).agents] == ["sec-1", "sec-2"]


async def test_version_bumps_only_on_a_real_change_once_across_replicas(store):
    await apply_config(store, config(), stamp=1.0)
    # Three replicas of the same new deploy apply it at once: one bump.
    results = await asyncio.gather(*(apply_config(store, config(councils=[SEC]), stamp=2.0) for _ in range(3)))
    assert sorted(r.councils["SEC"] for r in results) == ["created", "unchanged", "unchanged"]
    assert (await versions(store))["SEC"] == 1
    created_at = (await store.get_council("SEC")).created_at
    # An unchanged spec (defaults spelled out) keeps its version.
    same = {**SEC, "agents": [{**a, "temperature": 0.7, "persona": ""} for a in SEC["agents"]]}
    assert (await apply_config(store, config(councils=[same]), stamp=3.0)).councils == {"SEC": "unchanged"}
    # A real change bumps it, once, and keeps created_at.
    changed = {**SEC, "rounds": 2}
    results = await asyncio.gather(*(apply_config(store, config(councils=[changed]), stamp=4.0) for _ in range(3)))
    assert sorted(r.councils["SEC"] for r in results) == ["unchanged", "unchanged", "updated"]
    spec = await store.get_council("SEC")
    assert spec.version == 2 and spec.rounds == 2 and spec.created_at == created_at
    # The default councils were left alone all along.
    assert all(v == 1 for r, v in (await versions(store)).items() if r != "SEC")


async def test_api_councils_stay_unless_the_config_prunes(store):
    await apply_config(store, config(councils=[SEC]), stamp=1.0)
    await store.put_council(default_council("OPS", "fake"))  # created through the API
    kept = await apply_config(store, config(councils=[SEC]), stamp=2.0)
    assert kept.pruned == [] and set(await versions(store)) == {"SEC", "OPS"}
    pruned = await apply_config(store, config(councils=[SEC], prune_councils=True), stamp=3.0)
    assert pruned.pruned == ["OPS"] and set(await versions(store)) == {"SEC"}
    assert await store.get_council("OPS") is None


async def test_prune_without_declared_councils_keeps_the_default_roles(store):
    await apply_config(store, config(), stamp=1.0)
    await store.put_council(default_council("OPS", "fake"))
    applied = await apply_config(store, config(prune_councils=True), stamp=2.0)
    assert applied.pruned == ["OPS"] and sorted(await versions(store)) == sorted(ROLES)


async def test_an_older_deploy_never_rolls_back_a_newer_one(store):
    await apply_config(store, config(councils=[SEC]), stamp=10.0)
    await apply_config(store, config(councils=[{**SEC, "rounds": 2}]), stamp=20.0)
    # A replica of the first deploy restarts in the middle of the rollout.
    stale = await apply_config(store, config(councils=[SEC], prune_councils=True), stamp=10.0)
    assert stale.stale and stale.councils == {} and stale.pruned == []
    spec = await store.get_council("SEC")
    assert spec.rounds == 2 and spec.version == 2


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


class FakeEngineHandle:
    def __init__(self, name: str, events: list, in_flight: int = 0):
        self.name, self.events, self.in_flight = name, events, in_flight

        async def start():
            await asyncio.sleep(0.05)
            events.append(("started", name))
            return {"ready": True}

        async def health():
            if self.in_flight:
                self.in_flight -= 1  # one call finishes per poll
            return {"in_flight": self.in_flight}

        self.start, self.health = _Method(start), _Method(health)


class FakeRegistry:
    def __init__(self):
        self.actors: dict[str, FakeEngineHandle] = {}
        self.events: list = []

    def engine(self, spec, actor_name=None):
        name = actor_name or f"engine-{spec.name}"
        self.events.append(("created", name))
        return self.actors.setdefault(name, FakeEngineHandle(name, self.events))

    def engine_replicas(self, spec, actor_name):
        return [self.engine(spec, name) for name in replica_actor_names(actor_name, spec.replicas)]

    def engine_actor_names(self):
        return sorted(self.actors)

    def named(self, name):
        return self.actors.get(name)

    def kill(self, handle):
        self.events.append(("killed", handle.name))
        del self.actors[handle.name]


async def test_changed_engine_rolls_over_new_before_old(store):
    registry = FakeRegistry()
    await apply_config(store, config(), stamp=1.0)
    old = registry.engine(EngineSpec(name="fake", model="test-engine"), await store.engine_actor("fake"))
    assert old.name == "engine-fake"
    old.in_flight = 3  # calls still running on the old engine

    new_spec = {"name": "fake", "model": "test-engine", "max_num_seqs": 32}
    applied = await apply_config(store, config(engines=[new_spec]), stamp=2.0)
    assert [s.name for s in applied.engines_changed] == ["fake"]
    # Nothing switched yet: the old spec and actor still serve.
    assert (await store.get_engine("fake")).max_num_seqs == 64
    assert await store.engine_actor("fake") == "engine-fake"

    new_name = await roll_engine(store, registry, applied.engines_changed[0])
    assert new_name == rolled_actor_name(applied.engines_changed[0]) and new_name.startswith("engine-fake.")
    assert ("started", new_name) in registry.events
    assert await store.engine_actor("fake") == new_name and (await store.get_engine("fake")).max_num_seqs == 32
    # Replicas of the same deploy agree on the actor (its name is the spec's hash), and see no change now.
    assert rolled_actor_name(EngineSpec.model_validate(new_spec)) == new_name
    assert (await apply_config(store, config(engines=[new_spec]), stamp=2.0)).engines_changed == []

    assert await declarative.stale_engine_actors(store, registry) == ["engine-fake"]
    assert await retire_engine_actor(registry, "engine-fake", drain_s=10, poll_s=0.01)
    assert registry.events[-1] == ("killed", "engine-fake") and old.in_flight == 0  # drained first
    assert await declarative.stale_engine_actors(store, registry) == []


async def test_engine_that_cannot_start_leaves_the_old_one_serving(store):
    registry = FakeRegistry()
    await apply_config(store, config(), stamp=1.0)

    async def broken():
        raise RuntimeError("model not found")

    spec = EngineSpec(name="fake", model="no-such-model")
    registry.actors[rolled_actor_name(spec)] = FakeEngineHandle(rolled_actor_name(spec), registry.events)
    registry.actors[rolled_actor_name(spec)].start = _Method(broken)
    with pytest.raises(RuntimeError, match="model not found"):
        await roll_engine(store, registry, spec)
    assert await store.engine_actor("fake") == "engine-fake"
    assert (await store.get_engine("fake")).model == "test-engine"


def test_config_errors_name_the_field():
    with pytest.raises(ValidationError, match="enginez"):
        AppConfig.model_validate({"enginez": [], "engines": [{"name": "fake", "model": "m"}],
                                  "default_councils": {"engine": "fake"}})
    with pytest.raises(ValidationError, match=r"councils\[SEC\]: unknown engine\(s\) \['ghost'\]"):
        config(councils=[{**SEC, "agents": [{"id": "a", "engine": "ghost"}]}])
    with pytest.raises(ValidationError, match="roles must be unique"):
        config(councils=[SEC, SEC])
    with pytest.raises(ValidationError, match="agentz"):
        config(councils=[{**SEC, "agentz": []}])


def test_runtime_settings_validate_and_apply():
    with pytest.raises(ValidationError, match="record_tll_s"):
        RuntimeSettings.model_validate({"record_tll_s": 60})
    with pytest.raises(ValidationError, match="record_ttl_s"):
        RuntimeSettings.model_validate({"record_ttl_s": 0})
    with pytest.raises(ValidationError, match="exceeds max_timeout_s"):
        RuntimeSettings.model_validate({"default_timeout_s": 600, "max_timeout_s": 60})

    settings = RuntimeSettings.model_validate({"default_timeout_s": 42, "max_timeout_s": 100,
                                               "limits": {"max_task_chars": 10}})
    assert settings.limits.max_task_chars == 10 and RuntimeSettings().limits is None  # None: the args' limits
    council = default_council("DEV", "fake", 3, 1, 64)
    req = resolve_request(DeliberationRequest(role="DEV", task="short"), council, settings)
    assert req.constraints.timeout_s == 42
    explicit = DeliberationRequest(role="DEV", task="short", constraints={"timeout_s": 90})
    assert resolve_request(explicit, council, settings).constraints.timeout_s == 90
    with pytest.raises(ApiError, match="timeout_s=101 is over the limit of 100s") as exc:
        resolve_request(DeliberationRequest(role="DEV", task="x", constraints={"timeout_s": 101}), council, settings)
    assert exc.value.status == 422 and "body.constraints.timeout_s" in exc.value.message


async def test_council_reads_retention_from_the_live_settings(valkey_server, key_prefix, store):
    from actors.council import Council

    await store.put_council(default_council("DEV", "fake"))
    await store.put_settings({"record_ttl_s": 123})
    council = Council("DEV", valkey_server.url, key_prefix, record_ttl_s=3600)  # a (re)started council
    try:
        assert council.store.record_ttl_s == 123
        await store.put_settings({"record_ttl_s": 456})
        assert await council.configure() == {"record_ttl_s": 456}
    finally:
        await council.store.close()

