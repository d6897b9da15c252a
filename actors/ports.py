"""The three things the deliberation protocol needs from the outside world.

The protocol never imports Ray or Valkey: the council actor hands it objects of these shapes,
and tests hand it in-process fakes (or the in-process verifier of actors/verification.py).
"""

from __future__ import annotations

from typing import Any, Protocol

from .models.councils import ScoringSpec
from .models.records import CheckResult, Completion, DeliberationRecord
from .models.requests import DeliberationRequest


class Generator(Protocol):
    async def generate(
        self,
        engine: str,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
        seed: int | None,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        """One chat completion on the named engine. Concurrent calls are batched by the engine.
        With json_schema, the answer is constrained to JSON of that schema (structured outputs)."""
        ...


class Verifier(Protocol):
    async def verify(
        self, texts: list[str], request: DeliberationRequest, names: list[str], scoring: ScoringSpec,
        examples: list[str] | None = None,
    ) -> list[list[CheckResult]]:
        """Run the named verifiers on each text (concurrently, off the caller's event loop); `examples` are
        asserts the council's agents wrote for the task (run on code when the request has no tests)."""
        ...


class RecordSink(Protocol):
    async def checkpoint(self, record: DeliberationRecord) -> None:
        """Persist the record (called after every finished stage)."""
        ...

    async def event(self, record: DeliberationRecord, kind: str, data: dict[str, Any]) -> None:
        """Publish one stage event (proposal, critique, revision, score...)."""
        ...
