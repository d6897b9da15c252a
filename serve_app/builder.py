"""The typed application builder: `serve deploy` / `serve run` validate the config's `args` as an AppConfig,
so a wrong field fails the deploy with a message that names it."""

import time

from ray.serve import Application

from actors.models.config import AppConfig

from .app import Ingress


def build_app(args: AppConfig) -> Application:
    # Serve runs the builder only when the application's args (or code) changed, so this stamp marks
    # one deploy: replicas of an older deploy never re-apply their councils and engines over a newer
    # one (serve_app/declarative.py). A change of user_config or num_replicas keeps it.
    return Ingress.bind(args.model_dump(mode="json"), time.time())
