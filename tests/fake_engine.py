"""A deterministic engine with the real engine actor's interface, for fast Ray tests.

Tests register it under the engine's actor name before the ingress reconciles; the registry's
get-or-create then finds it. Test-only: never a default anywhere in the project.
"""

from __future__ import annotations

import asyncio
import os

from tests.fakes import default_response


class FakeEngine:
    def __init__(self, spec: dict, delay_s: float = 0.0):
        self.spec_ = spec
        self.delay_s = delay_s
        self.calls = 0
        self.in_flight = 0
        from actors.metrics import engine_started

        engine_started(spec.get("name", "fake"))  # as the real engine does: councils_engine_restarts

    async def generate(self, messages, temperature: float = 0.7, max_tokens: int = 128, seed=None,
                       json_schema=None) -> dict:
        self.calls += 1
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        text = default_response(messages, seed, json_schema)
        return {"text": text, "prompt_tokens": sum(len(m["content"].split()) for m in messages),
                "completion_tokens": len(text.split()), "finish_reason": "stop"}

    async def start(self) -> dict:
        return await self.health()

    async def set_delay(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def load(self) -> int:
        return self.in_flight

    async def health(self) -> dict:
        import ray

        return {"ok": True, "pid": os.getpid(), "calls": self.calls, "in_flight": self.in_flight,
                "node_id": ray.get_runtime_context().get_node_id()}

    def spec(self) -> dict:
        return self.spec_
