"""Where verification runs: in this process's threads (LocalVerifier) or as Ray tasks (RayVerifier).

Both implement the protocol's Verifier port over `actors.verifiers.run_verifiers`, which drives the
sandboxed subprocesses; neither blocks the caller's event loop. A council actor uses Ray tasks, so
verification scales with the cluster and can be pinned to CPU nodes with a custom resource.

While the GCS is down (a head restart), a task that needs a new Ray worker process cannot start: the worker
must register with the GCS. A deliberation would then wait for the head. So RayVerifier probes the GCS's port
every GCS_PROBE_S while tasks are pending, and when nothing listens there it runs the pending texts in this
process instead (the same sandboxed subprocesses; the abandoned tasks may still run once the head is back,
and their results are dropped).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .models.config import VerificationConfig
from .models.councils import ScoringSpec
from .models.records import CheckResult
from .models.requests import DeliberationRequest


log = logging.getLogger("councils.verification")

GCS_PROBE_S = 2.0  # how long Ray tasks may be pending before the GCS is probed (then again every as long)


async def gcs_listening(address: str, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on the GCS's host:port (a refused connection: the GCS is down)."""
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


def _verify_one(content: str, request: dict, names: list[str], scoring: dict, allow_unisolated: bool,
                examples: list[str] | None = None) -> list[dict]:
    from .verifiers import run_verifiers

    req = DeliberationRequest.model_validate(request)
    checks = run_verifiers(content, req.task, req.constraints, names, ScoringSpec.model_validate(scoring),
                           allow_unisolated=allow_unisolated, examples=examples)
    return [c.model_dump() for c in checks]


class LocalVerifier:
    """Verification in worker threads of this process (each check runs in its own sandboxed subprocess)."""

    def __init__(self, allow_unisolated: bool = False):
        self.allow_unisolated = allow_unisolated  # verification.allow_unisolated_sandbox

    async def verify(self, texts: list[str], request: DeliberationRequest, names: list[str],
                     scoring: ScoringSpec, examples: list[str] | None = None) -> list[list[CheckResult]]:
        req, sc = request.model_dump(mode="json"), scoring.model_dump(mode="json")
        results = await asyncio.gather(*(asyncio.to_thread(_verify_one, t, req, names, sc, self.allow_unisolated,
                                                           examples) for t in texts))
        return [[CheckResult.model_validate(c) for c in checks] for checks in results]


class RayVerifier:
    """Verification as Ray tasks, one per text, CPU only; in this process while the GCS is down."""

    def __init__(self, config: VerificationConfig | dict[str, Any] | None = None, gcs_address: str | None = None):
        import ray

        self.config = VerificationConfig.model_validate(config or {})
        options: dict[str, Any] = {"num_cpus": self.config.num_cpus, "num_gpus": 0,
                                   "max_retries": self.config.max_retries}
        if self.config.resources:
            options["resources"] = self.config.resources
        self.task = ray.remote(_verify_one).options(**options)
        self.gcs_address = gcs_address or ray.get_runtime_context().gcs_address
        self.local = LocalVerifier(self.config.allow_unisolated_sandbox)

    async def verify(self, texts: list[str], request: DeliberationRequest, names: list[str],
                     scoring: ScoringSpec, examples: list[str] | None = None) -> list[list[CheckResult]]:
        req, sc = request.model_dump(mode="json"), scoring.model_dump(mode="json")
        allow = self.config.allow_unisolated_sandbox
        pending = {i: asyncio.ensure_future(self.task.remote(t, req, names, sc, allow, examples))
                   for i, t in enumerate(texts)}
        results: dict[int, list[CheckResult]] = {}
        while pending:
            await asyncio.wait(pending.values(), timeout=GCS_PROBE_S)
            for i, future in list(pending.items()):
                if future.done():
                    results[i] = [CheckResult.model_validate(c) for c in future.result()]
                    del pending[i]
            if pending and not await gcs_listening(self.gcs_address):
                log.warning("GCS at %s is down: verifying %d text(s) in this process", self.gcs_address, len(pending))
                for future in pending.values():
                    future.cancel()
                local = await self.local.verify([texts[i] for i in pending], request, names, scoring, examples)
                results.update(zip(pending, local))
                pending = {}
        return [results[i] for i in range(len(texts))]
