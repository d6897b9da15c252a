"""Where verification runs: in this process's threads (LocalVerifier) or as Ray tasks (RayVerifier).

Both implement the protocol's Verifier port over `actors.verifiers.run_verifiers`, which drives the
sandboxed subprocesses; neither blocks the caller's event loop. A council actor uses Ray tasks, so
verification scales with the cluster and can be pinned to CPU nodes with a custom resource.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .models.config import VerificationConfig
from .models.councils import ScoringSpec
from .models.records import CheckResult
from .models.requests import DeliberationRequest


def _verify_one(content: str, request: dict, names: list[str], scoring: dict) -> list[dict]:
    from .verifiers import run_verifiers

    req = DeliberationRequest.model_validate(request)
    checks = run_verifiers(content, req.task, req.constraints, names, ScoringSpec.model_validate(scoring))
    return [c.model_dump() for c in checks]


class LocalVerifier:
    """Verification in worker threads of this process (each check runs in its own sandboxed subprocess)."""

    async def verify(self, texts: list[str], request: DeliberationRequest, names: list[str],
                     scoring: ScoringSpec) -> list[list[CheckResult]]:
        req, sc = request.model_dump(mode="json"), scoring.model_dump(mode="json")
        results = await asyncio.gather(*(asyncio.to_thread(_verify_one, t, req, names, sc) for t in texts))
        return [[CheckResult.model_validate(c) for c in checks] for checks in results]


class RayVerifier:
    """Verification as Ray tasks, one per text, CPU only."""

    def __init__(self, config: VerificationConfig | dict[str, Any] | None = None):
        import ray

        self.config = VerificationConfig.model_validate(config or {})
        options: dict[str, Any] = {"num_cpus": self.config.num_cpus, "num_gpus": 0,
                                   "max_retries": self.config.max_retries}
        if self.config.resources:
            options["resources"] = self.config.resources
        self.task = ray.remote(_verify_one).options(**options)

    async def verify(self, texts: list[str], request: DeliberationRequest, names: list[str],
                     scoring: ScoringSpec) -> list[list[CheckResult]]:
        req, sc = request.model_dump(mode="json"), scoring.model_dump(mode="json")
        results = await asyncio.gather(*(self.task.remote(t, req, names, sc) for t in texts))
        return [[CheckResult.model_validate(c) for c in checks] for checks in results]
