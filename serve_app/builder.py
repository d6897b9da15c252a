"""The typed application builder: `serve deploy` / `serve run` validate the config's `args` as an AppConfig,
so a wrong field fails the deploy with a message that names it."""


from ray.serve import Application

from actors.specs import AppConfig

from .app import Ingress


def build_app(args: AppConfig) -> Application:
    return Ingress.bind(args.model_dump(mode="json"))
