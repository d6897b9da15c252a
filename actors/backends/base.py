"""What every engine backend raises, and what the Engine facade needs of a backend."""

from __future__ import annotations

from typing import Any, Protocol

from ..models.records import Completion


class EngineError(RuntimeError):
    """A generate call failed for a reason on the engine side."""


class EngineUnavailable(EngineError):
    """The engine cannot serve right now (not started, dead, upstream unreachable): HTTP 503."""


class Backend(Protocol):
    """One model behind `generate`; safe to call concurrently once `start` has returned."""

    @property
    def dead(self) -> bool:
        """True when the backend cannot serve again and must be replaced (vLLM's engine core died)."""
        ...

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def health(self) -> dict[str, Any]: ...

    async def generate(self, messages: list[dict[str, str]], temperature: float, max_tokens: int, seed: int | None,
                       json_schema: dict[str, Any] | None = None) -> Completion: ...
