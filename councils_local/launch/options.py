"""The launcher's command line (typer, like the `councils` command): its options, each with its default from the
environment (EnvSettings: COUNCILS_*) or the repository, read when the command line is parsed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import typer

from serve_app.settings import EnvSettings, env_var

PROG = "python -m councils_local.launcher"
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "configs" / "local.yaml"
DEFAULT_DATA_DIR = ROOT / ".data"


@dataclass
class LaunchOptions:
    """One run's options, every default filled in."""

    config: Path
    data_dir: Path
    valkey_port: int
    ray_port: int
    dashboard_port: int
    metrics_port: int
    http_port: int | None  # None: the config's http_options.port
    namespace: str
    num_cpus: int | None  # None: this machine's
    ready_timeout: float
    ray_auth: str


def env_default(field: str, what: str) -> str:
    """The help of an option whose default is an EnvSettings field: `what (default: $COUNCILS_X or its default)`."""
    return f"{what} (default: ${env_var(field)} or {EnvSettings.model_fields[field].default})"


def _command(env: EnvSettings, keep: Callable[[LaunchOptions], None]):
    """The typer command that hands the run's LaunchOptions to `keep`; `env` gives the environment's defaults."""

    def launch(
        config: Annotated[str, typer.Option(help="the Serve config to deploy")] = str(DEFAULT_CONFIG),
        data_dir: Annotated[str | None, typer.Option(
            help=f"Valkey's data, the Ray token, logs (default: ${env_var('data_dir')} or .data)")] = None,
        valkey_port: Annotated[int | None, typer.Option(
            help=env_default("valkey_port", "the embedded Valkey's port"))] = None,
        ray_port: Annotated[int | None, typer.Option(help=env_default("ray_port", "the Ray head's GCS port"))] = None,
        dashboard_port: Annotated[int | None, typer.Option(
            help=env_default("dashboard_port", "the Ray dashboard's port"))] = None,
        metrics_port: Annotated[int | None, typer.Option(help=env_default(
            "metrics_port", "Prometheus metrics of the node (ray start --metrics-export-port); 0: a random port"))
        ] = None,
        http_port: Annotated[int | None, typer.Option(
            help="override http_options.port of the config (default: the config's, 8000)")] = None,
        namespace: Annotated[str | None, typer.Option(help=env_default(
            "gcs_namespace", "RAY_external_storage_namespace: keep it stable so a restart finds its cluster"))
        ] = None,
        num_cpus: Annotated[int | None, typer.Option(
            help="CPUs the worker node offers (default: this machine's); the head offers none")] = None,
        ready_timeout: Annotated[float, typer.Option(help="seconds to wait for /readyz")] = 900,
        ray_auth: Annotated[Literal["token", "disabled"] | None, typer.Option(help=env_default(
            "ray_auth", "Ray token authentication of the local cluster (token: the launcher creates the token, "
                        "0600, under the data dir)"))] = None,
    ) -> None:
        def given(value, default):
            return default if value is None else value

        keep(LaunchOptions(
            config=Path(config), data_dir=Path(given(data_dir, env.data_dir or str(DEFAULT_DATA_DIR))),
            valkey_port=given(valkey_port, env.valkey_port), ray_port=given(ray_port, env.ray_port),
            dashboard_port=given(dashboard_port, env.dashboard_port),
            metrics_port=given(metrics_port, env.metrics_port), http_port=http_port,
            namespace=given(namespace, env.gcs_namespace), num_cpus=num_cpus, ready_timeout=ready_timeout,
            ray_auth=given(ray_auth, env.ray_auth)))

    return launch


def parse(argv: list[str] | None, env: EnvSettings, description: str | None = None) -> LaunchOptions:
    """The options of `argv` (default: sys.argv[1:]). As with argparse before: --help prints and exits 0; bad usage
    prints the usage and the error on stderr and exits 2 (typer's, as `councils` does)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                      context_settings={"help_option_names": ["-h", "--help"]})
    found: list[LaunchOptions] = []
    # "\b": each paragraph of the description printed as written, not re-wrapped.
    text = "\n\n".join(f"\b\n{part}" for part in description.strip().split("\n\n")) if description else None
    app.command(help=text)(_command(env, found.append))
    try:
        typer.main.get_command(app).main(args=argv, prog_name=PROG)  # standalone: it always exits
    except SystemExit:
        if found:
            return found[0]
        raise
    raise AssertionError("typer's standalone command returned")  # pragma: no cover
