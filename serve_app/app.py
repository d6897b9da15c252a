"""The HTTP ingress: a stateless Ray Serve deployment that builds, per replica, one CouncilService
(serve_app/service.py) and the FastAPI app over it (serve_app/api.py, routes in serve_app/routes/).

Everything it knows is in Valkey; everything it runs is in the council and engine actors. Any number of
replicas may run, and a rollout replaces them without touching a council. On start a replica checks its own
exposure and the verifiers, then reconciles in the background (serve_app/reconcile.py): it answers /healthz at
once and /readyz when done. Live settings (`user_config`) arrive through `reconfigure`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from ray import serve

from actors import topology, verifiers
from actors.models.config import AppConfig, RuntimeSettings
from actors.store import Store

from . import auth, redact, security
from .api import build_api
from .reconcile import Reconciler
from .records import load_idempotency_secret
from .registry import ActorRegistry
from .service import CouncilService
from .settings import valkey_url

log = logging.getLogger("councils.ingress")


# On a worker node (actors/topology.py): a head crash leaves the replica, and its node's proxy, serving.
# max_queued_requests: beyond it Serve answers 503 at once instead of queueing requests without end (issue 23);
# waiters are capped below max_ongoing_requests (limits.max_waiters), so they never take every slot.
@serve.deployment(max_ongoing_requests=256, max_queued_requests=256,
                  ray_actor_options={"num_cpus": 0, "resources": topology.demand(topology.WORKER)})
@serve.ingress()
class Ingress:
    def __init__(self, config: AppConfig | dict, deployed_at: float | None = None):
        config = AppConfig.model_validate(config)
        url = config.valkey_url or valkey_url()  # COUNCILS_VALKEY_URL or COUNCILS_VALKEY_URL_FILE
        if not url:
            raise ValueError("no Valkey: set valkey_url in the config args, COUNCILS_VALKEY_URL or "
                             "COUNCILS_VALKEY_URL_FILE")
        redact.register_url(url)  # its password never shows in an error or a log line of ours
        # COUNCILS_API_TOKEN(_FILE), COUNCILS_ADMIN_TOKEN(_FILE); an unreadable token file stops the replica here
        self.tokens = auth.TokenAuth.from_env(public_docs=config.public_docs)
        # An open API on a network interface only on purpose (docs/security.md): else the deploy fails, saying why.
        http_host = security.serve_http_host()
        security.check_exposure(http_host, self.tokens.on, config.allow_unauthenticated)
        # A verifier whose package is missing, or that executes code where the sandbox cannot isolate (unless
        # the operator allowed that), stops the replica, naming what is missing.
        verifiers.check_installed(allow_unisolated=config.verification.allow_unisolated_sandbox)
        store = Store(url, config.key_prefix, config.record_ttl_s)
        registry = ActorRegistry(url, config.key_prefix, config.record_ttl_s, config.council_max_concurrency,
                                 config.verification.model_dump())
        # deployed_at: when the builder ran (serve deploy of changed args); orders configs, see declarative.py.
        # The Idempotency-Key HMAC's key: COUNCILS_IDEMPOTENCY_SECRET_FILE (an unreadable file stops the replica)
        idempotency_secret = load_idempotency_secret()
        if idempotency_secret:
            redact.register(idempotency_secret.decode())
        self.service = CouncilService(config, store, registry, http_host=http_host, deployed_at=deployed_at,
                                      idempotency_secret=idempotency_secret)
        self.reconciler = Reconciler(self.service)
        self.reconciler.start()

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this after the constructor: the routes are wired to this replica's service here."""
        return build_api(self.service, self.tokens)

    async def reconfigure(self, user_config: dict | None) -> None:
        """Serve calls this with the deployment's user_config at start and whenever only it changed:
        the replica keeps running. An invalid user_config raises, naming the field (deploy fails)."""
        settings = RuntimeSettings.model_validate(user_config or {})
        self.service.apply_settings(settings)
        log.info("settings applied: %s", settings.model_dump())
        self.reconciler.push_settings_soon()
