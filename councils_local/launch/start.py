"""The start sequence of `make run`: the Serve config, Valkey (embedded, or $COUNCILS_VALKEY_URL's), the Ray head,
the worker node, `serve deploy`. Whatever starts is kept in a Started at once, so that it is stopped whatever fails
after it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from actors import topology
from serve_app.redact import redact_url
from serve_app.settings import EnvSettings

from ..processes import log, wait_for
from ..ray_nodes import BIN, RayHead, RayWorker, alive_nodes, ray_redis_args
from ..supervisor import exit_reason
from ..valkey_server import ValkeyProcess, free_port
from .environment import node_env
from .options import LaunchOptions
from .supervision import Started


@dataclass
class ServeConfig:
    """The Serve config to deploy: its file and what it says."""

    path: Path
    body: dict

    @classmethod
    def load(cls, path: Path, http_port: int | None, data: Path) -> ServeConfig:
        """The config at `path`; with `http_port`, a copy under `data` with the port changed, nothing else."""
        body = yaml.safe_load(path.read_text())
        if http_port is not None:
            body.setdefault("http_options", {})["port"] = http_port
            path = data / "serve-config.yaml"
            path.write_text(yaml.safe_dump(body, sort_keys=False))
        return cls(path, body)

    @property
    def http_port(self) -> int:
        return self.body.get("http_options", {}).get("port", 8000)

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/readyz"

    @property
    def key_prefix(self) -> str:
        """The Valkey key prefix of the first application that sets one (the service's ACL user's keys)."""
        return next((app.get("args", {}).get("key_prefix") for app in self.body.get("applications", [])
                     if app.get("args", {}).get("key_prefix")), "councils:")


@dataclass
class ValkeyAccess:
    """Where the service and Ray's GCS find Valkey: the service's URL, and the GCS's address and credentials."""

    url: str
    gcs_address: str
    gcs_username: str | None
    gcs_password: str | None


def start_valkey(started: Started, config: ServeConfig, port: int, data: Path, env: EnvSettings) -> ValkeyAccess:
    """$COUNCILS_VALKEY_URL's Valkey, or the embedded one with two ACL users: `councils` (keys under the config's
    prefix, no dangerous command) and `gcs` (Ray's GCS)."""
    if env.valkey_url:
        access = ValkeyAccess(env.valkey_url, *ray_redis_args(env.valkey_url))
        log(f"external Valkey at {redact_url(env.valkey_url)}")
        return access
    valkey = started.valkey = ValkeyProcess(data / "valkey", port=port, acl_users=config.key_prefix).start()
    log(f"embedded Valkey on {valkey.address} (AOF in {valkey.data_dir}; ACL users councils and gcs, "
        f"passwords in {valkey.data_dir}, mode 0600)")
    return ValkeyAccess(valkey.url, valkey.address, valkey.gcs_username, valkey.gcs_password)


def ray_nodes(opts: LaunchOptions, env: EnvSettings, valkey: ValkeyAccess, child_env: dict[str, str],
              token_path: Path | None) -> tuple[RayHead, list[RayWorker]]:
    """The production topology (docs/topology.md): a head that runs no councils and no engines (num-cpus 0,
    no councils_* resources) and a worker node that offers every resource they require."""
    head = RayHead(port=opts.ray_port, dashboard_port=opts.dashboard_port,
                   temp_dir=env.ray_temp_dir or f"/tmp/councils-ray-{opts.ray_port}",
                   redis_address=valkey.gcs_address, namespace=opts.namespace, env=child_env,
                   redis_password=valkey.gcs_password, redis_username=valkey.gcs_username, num_cpus=0,
                   log_path=opts.data_dir / "ray-head.log", metrics_export_port=opts.metrics_port or None,
                   auth_token_path=token_path, dashboard_agent_port=free_port())
    workers = [RayWorker(head=head, env=child_env, log_path=opts.data_dir / "ray-worker.log", num_cpus=opts.num_cpus,
                         resources=topology.node_resources(), metrics_export_port=free_port(),
                         dashboard_agent_port=free_port())]
    return head, workers


def check_started(nodes: list[RayHead]) -> None:
    for node in nodes:
        if not node.alive():
            raise RuntimeError(f"Ray node exited ({exit_reason(node.proc)}); see {node.log_path}")


def start_nodes(head: RayHead, workers: list[RayWorker], namespace: str) -> None:
    """The head, once its dashboard answers the worker nodes, until every one has joined."""
    head.start()
    log(f"Ray head on {head.gcs_address} (GCS tables in Valkey, namespace {namespace!r}; num-cpus 0: "
        f"GCS, dashboard, Serve controller); dashboard {head.dashboard_url}"
        + (f"; metrics {head.metrics_url}" if head.metrics_url else ""))
    if head.auth_token_path:
        log(f"Ray token authentication on: the token is in {head.auth_token_path} (0600); for ray/serve CLI calls "
            f"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={head.auth_token_path}")
    wait_for(head.answers, 180, "Ray dashboard")
    for worker in workers:
        worker.start()
    wait_for(lambda: alive_nodes(head) >= 1 + len(workers), 180, "Ray worker node",
             on_wait=lambda: check_started(workers))
    for worker in workers:
        log(f"Ray {worker.name} node joined ({', '.join(sorted(worker.resources or {}))}"
            + (f"; metrics {worker.metrics_url}" if worker.metrics_url else "") + f"; log {worker.log_path})")


def serve_deploy(config: Path, dashboard_url: str, env: dict[str, str]) -> None:
    subprocess.run([str(BIN / "serve"), "deploy", str(config), "--address", dashboard_url],
                   check=True, env={**os.environ, **env})


def start(opts: LaunchOptions, env: EnvSettings, token_path: Path | None, started: Started) -> ServeConfig:
    """Valkey, the Ray head and worker node, then `serve deploy` of the config; the config deployed."""
    config = ServeConfig.load(opts.config, opts.http_port, opts.data_dir)
    valkey = start_valkey(started, config, opts.valkey_port, opts.data_dir, env)
    child_env = node_env(valkey.url, opts.data_dir)
    started.head, started.workers = ray_nodes(opts, env, valkey, child_env, token_path)
    start_nodes(started.head, started.workers, opts.namespace)
    serve_deploy(config.path, started.head.dashboard_url, child_env)
    log(f"deployed {config.path}; waiting for {config.ready_url}")
    return config
