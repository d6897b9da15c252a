"""serve_app/registry.py: council calls go through a kept handle (no GCS question per request), and a handle
whose actor is gone for good is replaced once. Fake handles, no Ray cluster."""

from __future__ import annotations

import pytest
from ray.exceptions import ActorDiedError

from serve_app.registry import ActorRegistry

pytestmark = pytest.mark.unit


class Handle:
    def __init__(self, dead: bool = False):
        self.dead, self.calls = dead, []
        self.submit = self

    def remote(self, *args):
        self.calls.append(args)

        async def answer():
            if self.dead:
                raise ActorDiedError()
            return "running"
        return answer()


@pytest.fixture
def registry(monkeypatch):
    reg = ActorRegistry("valkey://unused", "councils:", 60)
    reg.created = []

    def get_or_create(role):  # stands for the GCS round trip of RemoteCouncil.options(get_if_exists=True)
        handle = Handle(dead=len(reg.created) == 0 and role == "QA")
        reg.created.append((role, handle))
        return handle

    monkeypatch.setattr(reg, "council", get_or_create)
    return reg


async def test_the_handle_is_kept_across_calls(registry):
    assert await registry.council_calls("DEV").submit("a") == "running"
    assert await registry.council_calls("DEV").submit("b") == "running"
    [(role, handle)] = registry.created
    assert role == "DEV" and handle.calls == [("a",), ("b",)]


async def test_a_dead_handle_is_replaced_once(registry):
    assert await registry.council_calls("QA").submit("a") == "running"
    assert [r for r, _ in registry.created] == ["QA", "QA"]  # the first actor was gone: asked the GCS again
    assert registry.created[0][1].calls == [("a",)] and registry.created[1][1].calls == [("a",)]


async def test_a_council_that_stays_dead_raises(registry, monkeypatch):
    monkeypatch.setattr(registry, "council", lambda role: Handle(dead=True))
    with pytest.raises(ActorDiedError):
        await registry.council_calls("DEV").submit("a")
    assert "DEV" not in registry.councils
