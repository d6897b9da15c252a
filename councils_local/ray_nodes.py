"""The local cluster's Ray nodes: the Valkey-backed head and worker nodes (`ray start --block`), and their token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

from actors.topology import HEAD_RECOVERY_ENV, SURVIVE_GCS_ENV

from .processes import OWNER_ENV, http_get, kill_tree
from .valkey_server import write_private

RAY_TOKEN_FILE = "ray-auth-token"
IDEMPOTENCY_SECRET_FILE = "idempotency-secret"
# The head's processes (GCS, raylet, dashboard; its Ray workers, the Serve controller and the head's proxy, at
# Ray's worker niceness 15 on top, so 19) run at this niceness. Ray runs every worker at niceness 15 (the
# councils, the engine, the ingress on the worker node) and its own daemons at 0, so on one machine a restarting
# head (GCS reload, dashboard, Serve controller) took nearly all the CPU from the deliberations the worker node
# was still serving (docs/topology.md).
# In production the head is a machine of its own (cluster.yaml) and this does not apply.
HEAD_NICENESS = 10
# What is left of a node that died (its dashboard, agents) gets this long after SIGTERM before
# SIGKILL, when the supervisor restarts it. With the 20 s of a graceful stop, the new GCS of a crashed head
# started 25 s after the crash, and an ingress replica's answers were held until then (docs/topology.md).
DEAD_NODE_GRACE_S = 2
# A node being stopped on purpose for good (Ctrl-C): SIGTERM, then SIGKILL after this long. Ray 2.60's
# own graceful stop never finishes here: on SIGTERM the gcs_server hangs in "Stopping RayEventRecorder and
# flushing remaining events" until it is SIGKILLed (also when it is signalled alone, its agents alive), and the
# head's raylet takes 10 s; every other process of a node exits within a second. With 20 s, Ctrl-C of `make run`
# took 25 s, all of it waiting for that SIGKILL. Nothing durable is in a Ray node: the GCS keeps its tables in
# Valkey (a SIGKILLed GCS is a crash the stack recovers from, docs/topology.md), councils checkpoint to Valkey,
# and Valkey itself still stops gracefully (ValkeyProcess.stop: SIGTERM, its AOF flushed).
GRACEFUL_STOP_S = 2
# A node restarted on purpose while the rest of the cluster lives on (a test's head restart): its old processes
# get the 20 s they had before GRACEFUL_STOP_S was shortened. With 2 s, three graceful head restarts in a row left
# a single-node cluster whose Serve app did not come back within 5 minutes (tests/test_fault_tolerance.py, CI of
# 2026-11-28), and so did 12 s; with 20 s they pass. Why the longer grace matters there was not isolated.
RESTART_GRACE_S = 20

BIN = Path(sys.executable).parent


class RayHead:
    """`ray start --head --block` in its own session; restartable on the same ports and namespace.

    `resources`: custom resources the node offers (`--resources`; actors/topology.py). `make run`'s head offers
    none and `num_cpus=0` (docs/topology.md); a single-node test cluster offers them all.
    `dashboard_agent_port`: the node's dashboard agent HTTP port (Ray's default 52365 when None); two nodes on
    one machine need two.
    """

    def __init__(self, *, port: int, dashboard_port: int, temp_dir: str, redis_address: str,
                 namespace: str, env: dict[str, str], redis_password: str | None = None,
                 redis_username: str | None = None,
                 num_cpus: int | None = None, log_path: Path, metrics_export_port: int | None = None,
                 auth_token_path: Path | None = None, resources: dict[str, float] | None = None,
                 dashboard_agent_port: int | None = None):
        self.port = port
        self.dashboard_port = dashboard_port
        self.temp_dir = temp_dir
        self.redis_address = redis_address
        self.namespace = namespace
        self.redis_password = redis_password
        self.redis_username = redis_username
        self.num_cpus = num_cpus
        self.resources = resources
        self.dashboard_agent_port = dashboard_agent_port
        # Prometheus endpoint of this node's metrics agent (Ray's and the councils_* metrics).
        self.metrics_export_port = metrics_export_port
        self.env = env
        # Ray token authentication (RAY_AUTH_MODE=token, the token in this 0600 file): None leaves it off.
        self.auth_token_path = auth_token_path
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        # Inherited by every process of this head (gcs_server, raylet, workers): stop() finds them all.
        self.marker = uuid.uuid4().hex
        # One start/stop at a time: a supervisor thread and an operator may both act on a crash.
        self.lock = threading.RLock()

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def metrics_url(self) -> str | None:
        return f"http://127.0.0.1:{self.metrics_export_port}/metrics" if self.metrics_export_port else None

    def answers(self) -> bool:
        """The dashboard answers (401 too: then Ray's token authentication is on)."""
        return http_get(f"{self.dashboard_url}/api/version")[0] in (200, 401)

    def auth_env(self) -> dict[str, str]:
        """What every Ray process and Ray CLI call of this cluster needs: the mode, and where the token is."""
        if self.auth_token_path is None:
            # Explicit, so a token left in ~/.ray by another cluster does not silently switch it on.
            return {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.auth_token_path)}

    def auth_headers(self) -> dict[str, str]:
        if self.auth_token_path is None:
            return {}
        return {"Authorization": f"Bearer {self.auth_token_path.read_text().strip()}"}

    def start(self) -> None:
        with self.lock:
            self._start()

    def restart(self, stop_grace_s: float = RESTART_GRACE_S) -> None:
        with self.lock:
            self.stop(stop_grace_s)
            self._start()

    def restart_if_dead(self) -> bool:
        """A node whose `ray start --block` exited (its GCS or raylet died): what is left of it gets
        DEAD_NODE_GRACE_S after SIGTERM, not a graceful stop's GRACEFUL_STOP_S. The worker node's actors wait for
        the new GCS, and an ingress replica's answers can too (docs/topology.md), so every second counts."""
        with self.lock:
            if self.alive():
                return False
            self.restart(DEAD_NODE_GRACE_S)
            return True

    def _node_args(self) -> list[str]:
        """The `ray start` arguments every node of this launcher has.

        No log monitor: it polls the node's log files every 0.1 s to stream worker output to drivers (2 % of a core
        per node here, idle), and no driver of this stack reads it; the files stay, and the dashboard reads them."""
        cmd = ["--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1", "--include-log-monitor=False"]
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        if self.resources:
            cmd.append(f"--resources={json.dumps(self.resources, separators=(',', ':'))}")
        if self.metrics_export_port:
            cmd.append(f"--metrics-export-port={self.metrics_export_port}")
        if self.dashboard_agent_port:
            cmd.append(f"--dashboard-agent-listen-port={self.dashboard_agent_port}")
        return cmd

    def _command(self, env: dict[str, str]) -> list[str]:
        env.update({"RAY_REDIS_ADDRESS": self.redis_address,
                    "RAY_external_storage_namespace": self.namespace,
                    **HEAD_RECOVERY_ENV})
        # serve_app.ray_start is Ray's `ray start` with the Valkey password kept off every command line.
        cmd = [sys.executable, "-m", "serve_app.ray_start", "start", "--head", *self._node_args(),
               f"--port={self.port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
               f"--temp-dir={self.temp_dir}"]
        if self.redis_password:
            env["COUNCILS_GCS_REDIS_PASSWORD"] = self.redis_password
        if self.redis_username:
            cmd.append(f"--redis-username={self.redis_username}")
        return cmd

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}  # the token: by its file only
        env.update({**self.env, **self.auth_env()})
        cmd = self._command(env)
        if "--head" in cmd:
            # `ray start --head` refuses to start when the address its last start wrote (<temp dir>/
            # ray_current_cluster) appears as `--gcs-address` on any running process: after a head crash our
            # own worker node's raylet and workers do, while they wait for the GCS to come back. A GCS really
            # on the port still fails the start (it cannot bind), so only the stale marker goes.
            Path(self.temp_dir, "ray_current_cluster").unlink(missing_ok=True)
            cmd = ["nice", "-n", str(HEAD_NICENESS), *cmd]  # exec'd: self.proc is still `ray start`
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        env[OWNER_ENV] = self.marker
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = GRACEFUL_STOP_S) -> None:
        """Stop the head and everything it started, also what outlived a killed `ray start` and holds a port."""
        with self.lock:
            if self.proc is None:
                return
            kill_tree(self.proc.pid, timeout_s, marker=self.marker)
            self.proc.poll()
            self.proc = None


class RayWorker(RayHead):
    """`ray start --address=<head> --block`: a worker node on this machine (its own raylet, object store,
    dashboard agent and metrics ports), in its own session, with the custom resources councils, engines and
    verification tasks require (actors/topology.py). It outlives a head crash: its raylet and actors wait for
    the GCS to come back on the same address (SURVIVE_GCS_ENV)."""

    def __init__(self, *, head: RayHead, env: dict[str, str], log_path: Path, num_cpus: int | None = None,
                 resources: dict[str, float] | None = None, metrics_export_port: int | None = None,
                 dashboard_agent_port: int | None = None, name: str = "worker"):
        super().__init__(port=head.port, dashboard_port=head.dashboard_port, temp_dir=head.temp_dir,
                         redis_address=head.redis_address, namespace=head.namespace, env=env,
                         num_cpus=num_cpus, log_path=log_path, metrics_export_port=metrics_export_port,
                         auth_token_path=head.auth_token_path, resources=resources,
                         dashboard_agent_port=dashboard_agent_port)
        self.head = head
        self.name = name

    def _command(self, env: dict[str, str]) -> list[str]:
        env.update(SURVIVE_GCS_ENV)
        # Only the GCS talks to Valkey: no address or password here. Worker ports from the OS (two raylets
        # on one machine must not share a port range).
        return [str(BIN / "ray"), "start", f"--address={self.head.gcs_address}", *self._node_args(),
                "--min-worker-port=0", "--max-worker-port=0", f"--temp-dir={self.temp_dir}"]

    def answers(self) -> bool:
        return self.alive()


def ray_auth_token(data_dir: Path) -> Path:
    """The local cluster's Ray token: generated once, kept 0600 under the data directory (make run)."""
    import secrets

    path = data_dir / RAY_TOKEN_FILE
    if not (path.exists() and path.read_text().strip()):
        write_private(path, secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return path


def idempotency_secret(data_dir: Path) -> Path:
    """The key of the ingress's Idempotency-Key HMAC (serve_app/records.py): generated once, kept 0600 under the
    data directory (make run); the replicas get its path (COUNCILS_IDEMPOTENCY_SECRET_FILE), never the value."""
    import secrets

    path = data_dir / IDEMPOTENCY_SECRET_FILE
    if not (path.exists() and path.read_text().strip()):
        write_private(path, secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return path


def ray_redis_args(url: str) -> tuple[str, str | None, str | None]:
    """(RAY_REDIS_ADDRESS, --redis-username, --redis-password) for Ray's GCS from a Valkey URL:
    `rediss://` keeps its scheme (Ray then speaks TLS; RAY_REDIS_CA_CERT names the CA), credentials are
    URL-decoded."""
    parsed = urlparse(url)
    host_port = f"{parsed.hostname}:{parsed.port or 6379}"
    address = f"rediss://{host_port}" if parsed.scheme == "rediss" else host_port
    username = unquote(parsed.username) if parsed.username else None
    password = unquote(parsed.password) if parsed.password else None
    return address, username, password


def alive_nodes(head: RayHead) -> int:
    """How many Ray nodes are alive, from the dashboard's state API (0 when it does not answer)."""
    status, body = http_get(f"{head.dashboard_url}/api/v0/nodes?limit=100&detail=false",
                            headers=head.auth_headers())
    if status != 200:
        return 0
    try:
        nodes = json.loads(body)["data"]["result"]["result"]
    except (ValueError, KeyError, TypeError):
        return 0
    return sum(1 for n in nodes if n.get("state") == "ALIVE")
