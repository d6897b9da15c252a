"""The two things the deliberation protocol needs from the outside world.

The protocol never imports Ray or Valkey: the council actor hands it objects of these shapes,
and tests hand it in-process fakes.
"""

from __future__ import annotations

from typing import Any, Protocol

from .specs import Completion, DeliberationRecord


class Generator(Protocol):
    async def generate(
        self,
        engine: str,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
        seed: int | None,
    ) -> Completion:
        """One chat completion on the named engine. Concurrent calls are batched by the engine."""
        ...


class RecordSink(Protocol):
    async def checkpoint(self, record: DeliberationRecord) -> None:
        """Persist the record (called after every finished stage)."""
        ...

    async def event(self, record: DeliberationRecord, kind: str, data: dict[str, Any]) -> None:
        """Publish one stage event (proposal, critique, revision, score...)."""
        ...
