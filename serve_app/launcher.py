"""`make run`: the whole service on one machine, with nothing to set up by hand.

Starts, each in its own process group so that stopping touches only what it started:
  1. the embedded Valkey (AOF on, data under .data/valkey) unless COUNCILS_VALKEY_URL points elsewhere,
  2. a Ray head whose GCS keeps its tables in that Valkey (RAY_REDIS_ADDRESS + a stable
     RAY_external_storage_namespace), so detached councils and the Serve app survive a head restart,
  3. the Serve application through the real `serve deploy CONFIG`,
then waits for /readyz, prints a ready line, and supervises: a dead Valkey or Ray head is restarted
on the same port and namespace. Ctrl-C stops everything it started, by process group.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import psutil
import yaml

from actors import topology
from actors.topology import HEAD_RECOVERY_ENV, SURVIVE_GCS_ENV

from .redact import redact_url
from .settings import EnvSettings
from .valkey_server import ValkeyProcess, free_port, write_private

RAY_TOKEN_FILE = "ray-auth-token"
# The head's processes (GCS, raylet, dashboard; its Ray workers, the Serve controller and the head's proxy, at
# Ray's worker niceness 15 on top, so 19) run at this niceness. Ray runs every worker at niceness 15 (the
# councils, the engine, the ingress on the worker node) and its own daemons at 0, so on one machine a restarting
# head (GCS reload, dashboard, Serve controller) took nearly all the CPU from the deliberations the worker node
# was still serving: a SIGKILLed head cost 29 s to the next answer, 8 s with this (docs/benchmarks.md §7).
# In production the head is a machine of its own (cluster.yaml) and this does not apply.
HEAD_NICENESS = 10

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def log(msg: str) -> None:
    print(f"[councils] {msg}", flush=True)


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

    def restart(self) -> None:
        with self.lock:
            self.stop()
            self._start()

    def restart_if_dead(self) -> bool:
        with self.lock:
            if self.alive():
                return False
            self.restart()
            return True

    def _node_args(self) -> list[str]:
        """The `ray start` arguments every node of this launcher has."""
        cmd = ["--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
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
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        env[OWNER_ENV] = self.marker
        if "--head" in cmd:
            cmd = ["nice", "-n", str(HEAD_NICENESS), *cmd]  # exec'd: self.proc is still `ray start`
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 20) -> None:
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


class Backoff:
    """Delays between restarts of one process: none for the first after it ran a while, then doubling
    (base_s, 2 base_s, ...) up to cap_s, so a process that cannot stay up is not restarted every second."""

    def __init__(self, base_s: float = 1.0, cap_s: float = 60.0, stable_s: float = 60.0):
        self.base_s, self.cap_s, self.stable_s = base_s, cap_s, stable_s
        self.failures = 0  # restarts since it last stayed up for stable_s
        self.started_at: float | None = None

    def next_delay(self, now: float) -> float:
        if self.started_at is not None and now - self.started_at >= self.stable_s:
            self.failures = 0
        delay = 0.0 if self.failures == 0 else min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
        self.failures += 1
        return delay

    def started(self, now: float) -> None:
        self.started_at = now


def exit_reason(proc: subprocess.Popen | None) -> str:
    code = proc.poll() if proc is not None else None
    if code is None:
        return "not running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Heals the local cluster without a person: a dead Valkey restarts from its AOF, and a dead Ray head
    (GCS or raylet: `ray start --block` exits when either dies, and Ray's GCS exits on a Valkey outage)
    restarts on the same port and GCS namespace, where GCS fault tolerance brings the actors back.
    A dead worker node (`workers`) restarts and rejoins the head; a worker is left alone while only the head
    is down (its raylet waits for the GCS: SURVIVE_GCS_ENV), so its actors and their models stay.
    Restarts back off (Backoff) and every one is logged with why."""

    def __init__(self, head: RayHead, valkey: ValkeyProcess | None, say=log, clock=time.monotonic,
                 backoff=Backoff, workers: "list[RayWorker] | tuple" = ()):
        self.head = head
        self.valkey = valkey
        self.workers = list(workers)
        self.say = say
        self.clock = clock
        self.restarts = {"valkey": 0, "head": 0, **{w.name: 0 for w in self.workers}}
        self.backoff = {"valkey": backoff(), "head": backoff(), **{w.name: backoff() for w in self.workers}}
        self.due: dict[str, float] = {}  # component -> when its scheduled restart runs

    def check(self) -> None:
        if self.valkey is not None and not self.valkey.alive():
            self._restart("valkey", "Valkey", self.valkey.proc, self.valkey.start, "from its AOF")
        if self.head.proc is not None and not self.head.alive():
            self._restart("head", "Ray head", self.head.proc, self.head.restart_if_dead,
                          "on the same port and GCS namespace")
        for worker in self.workers:
            if worker.proc is not None and not worker.alive():
                self._restart(worker.name, f"Ray {worker.name} node", worker.proc, worker.restart_if_dead,
                              f"and rejoining the head at {self.head.gcs_address}")

    def _restart(self, name: str, what: str, proc, start, how: str) -> None:
        now = self.clock()
        if name not in self.due:
            delay = self.backoff[name].next_delay(now)
            self.due[name] = now + delay
            self.say(f"{what} died ({exit_reason(proc)}); restarting it {how} "
                     + (f"in {delay:.0f}s (attempt {self.backoff[name].failures} in a row)" if delay else "now"))
        if now < self.due[name]:
            return
        del self.due[name]
        try:
            start()
        except Exception as exc:  # the next check schedules another try, later
            self.say(f"{what} did not start: {type(exc).__name__}: {exc}")
            return
        self.backoff[name].started(self.clock())
        self.restarts[name] += 1
        self.say(f"{what} restarted {how}")


OWNER_ENV = "COUNCILS_PROCESS_OWNER"  # a marker every process a launcher started inherits


def owned_processes(pid: int, marker: str | None = None) -> list[psutil.Process]:
    """The process `pid`, its descendants, its process group and session, and every process of this user
    whose environment carries `marker` (OWNER_ENV): also what outlived its parent, was re-parented to init
    or left the group (Ray's workers), so nothing it started is missed."""
    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        found[pid] = root
        found.update((c.pid, c) for c in root.children(recursive=True))
    except psutil.NoSuchProcess:
        pass
    me = os.getuid()
    for p in psutil.process_iter(["uids"]):
        if p.pid == os.getpid() or p.pid in found:
            continue
        try:
            if p.info["uids"] is None or p.info["uids"].real != me:
                continue
            if os.getpgid(p.pid) == pid or os.getsid(p.pid) == pid or (
                    marker and p.environ().get(OWNER_ENV) == marker):
                found[p.pid] = p
        except (psutil.Error, OSError):
            continue
    return list(found.values())


def kill_tree(pid: int, timeout_s: float = 20, marker: str | None = None) -> None:
    """SIGTERM everything `pid` started (owned_processes: even if `pid` itself is gone), then SIGKILL."""
    procs = owned_processes(pid, marker)
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def ray_auth_token(data_dir: Path) -> Path:
    """The local cluster's Ray token: generated once, kept 0600 under the data directory (make run)."""
    import secrets

    path = data_dir / RAY_TOKEN_FILE
    if not (path.exists() and path.read_text().strip()):
        write_private(path, secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return path


def stop_started(head: "RayHead | None", valkey: ValkeyProcess | None, workers: "list[RayWorker] | tuple" = ()) -> None:
    """Stop what the launcher started: the Ray worker nodes, the Ray head (and anything of either left holding
    a port), then Valkey, each even if the step before failed."""
    for what, proc in ([(f"the Ray {w.name} node", w) for w in workers]
                       + [("the Ray head", head), ("Valkey", valkey)]):
        if proc is None:
            continue
        try:
            proc.stop()
        except Exception as exc:  # keep going: the next one must stop too
            log(f"stopping {what}: {type(exc).__name__}: {exc}")


def http_get(url: str, timeout: float = 3, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception as e:
        return 0, str(e)


def wait_for(predicate, timeout_s: float, what: str, interval: float = 1.0, on_wait=None) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        if on_wait:
            on_wait()
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready within {timeout_s:.0f}s")


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


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


def check_started(nodes: "list[RayHead]") -> None:
    for node in nodes:
        if not node.alive():
            raise RuntimeError(f"Ray node exited ({exit_reason(node.proc)}); see {node.log_path}")


def serve_deploy(config: Path, dashboard_url: str, env: dict[str, str]) -> None:
    subprocess.run([str(BIN / "serve"), "deploy", str(config), "--address", dashboard_url],
                   check=True, env={**os.environ, **env})


def serve_failures(dashboard_url: str, headers: dict[str, str] | None = None) -> str | None:
    """The message of any Serve application whose deployment failed, from the dashboard's REST API."""
    status, body = http_get(f"{dashboard_url}/api/serve/applications/", headers=headers)
    if status != 200:
        return None
    try:
        apps = json.loads(body).get("applications", {})
    except ValueError:
        return None
    failed = []
    for name, app in apps.items():
        if app.get("status") != "DEPLOY_FAILED":
            continue
        failed.append(f"{name}: {app.get('message', '')}")
        # A replica that fails to start (e.g. a bad user_config) is explained on its deployment.
        failed += [f"{name}/{dep}: {d.get('message', '')}" for dep, d in (app.get("deployments") or {}).items()
                   if d.get("status") in ("DEPLOY_FAILED", "UNHEALTHY") and d.get("message")]
    return "\n".join(failed) or None


def main(argv: list[str] | None = None) -> int:
    env = EnvSettings()  # COUNCILS_* (serve_app/settings.py)
    ap = argparse.ArgumentParser(prog="python -m serve_app.launcher", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "local.yaml"))
    ap.add_argument("--data-dir", default=env.data_dir or str(ROOT / ".data"))
    ap.add_argument("--valkey-port", type=int, default=env.valkey_port)
    ap.add_argument("--ray-port", type=int, default=env.ray_port)
    ap.add_argument("--dashboard-port", type=int, default=env.dashboard_port)
    ap.add_argument("--metrics-port", type=int, default=env.metrics_port,
                    help="Prometheus metrics of the node (ray start --metrics-export-port); 0: a random port")
    ap.add_argument("--http-port", type=int, default=None,
                    help="override http_options.port of the config (default: the config's, 8000)")
    ap.add_argument("--namespace", default=env.gcs_namespace,
                    help="RAY_external_storage_namespace: keep it stable so a restart finds its cluster")
    ap.add_argument("--num-cpus", type=int, default=None,
                    help="CPUs the worker node offers (default: this machine's); the head offers none")
    ap.add_argument("--ready-timeout", type=float, default=900)
    ap.add_argument("--ray-auth", choices=("token", "disabled"), default=env.ray_auth,
                    help="Ray token authentication of the local cluster (default token: the launcher creates the "
                         "token, 0600, under the data dir; $COUNCILS_RAY_AUTH)")
    args = ap.parse_args(argv)

    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)  # Valkey's password, the Ray token, the AOF: for this user only
    token_path = ray_auth_token(data) if args.ray_auth == "token" else None
    # The Ray CLI calls below (serve deploy) must match the head: same mode, same token file.
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_MODE"] = "token" if token_path else "disabled"
    if token_path:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    from actors.model_prep import ensure_dev_model

    log(f"dev model: {ensure_dev_model()}")

    if args.metrics_port and not port_is_free(args.metrics_port):
        busy, args.metrics_port = args.metrics_port, free_port()
        log(f"metrics port {busy} is taken; using {args.metrics_port} (set --metrics-port / COUNCILS_METRICS_PORT)")

    stopping = False

    def _stop(signum, _frame):
        nonlocal stopping
        if stopping:  # a second Ctrl-C (or SIGTERM) during the shutdown must not cut it short
            log(f"{signal.Signals(signum).name}: already stopping; waiting for what this started to exit")
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    # Also SIGINT explicitly: a shell starts background jobs with SIGINT ignored, and Python then keeps
    # ignoring it, so `kill -INT` of a backgrounded `make run` would otherwise do nothing.
    signal.signal(signal.SIGINT, _stop)
    # Everything below runs inside the try: whatever has been started when anything fails (a bad config,
    # a Valkey that does not come up, a signal) is stopped in the finally.
    valkey: ValkeyProcess | None = None
    head: RayHead | None = None
    workers: list[RayWorker] = []
    try:
        config_path = Path(args.config)
        config = yaml.safe_load(config_path.read_text())
        if args.http_port is not None:  # deploy a copy of the config with the port changed, nothing else
            config.setdefault("http_options", {})["port"] = args.http_port
            config_path = data / "serve-config.yaml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        args.http_port = config.get("http_options", {}).get("port", 8000)
        ready_url = f"http://127.0.0.1:{args.http_port}/readyz"
        external = env.valkey_url
        if external:
            url = external
            redis_address, username, password = ray_redis_args(url)
            log(f"external Valkey at {redact_url(url)}")
        else:
            valkey = ValkeyProcess(data / "valkey", port=args.valkey_port).start()
            url, redis_address, username, password = valkey.url, valkey.address, None, valkey.password
            log(f"embedded Valkey on {valkey.address} (AOF in {valkey.data_dir}; password in "
                f"{valkey.data_dir / 'password'}, mode 0600)")

        child_env = {
            "COUNCILS_VALKEY_URL": url,
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "HF_HUB_OFFLINE": "1",
            "RAY_SERVE_ENABLE_TASK_EVENTS": os.environ.get("RAY_SERVE_ENABLE_TASK_EVENTS", "0"),
        }
        head = RayHead(port=args.ray_port, dashboard_port=args.dashboard_port,
                       temp_dir=env.ray_temp_dir or f"/tmp/councils-ray-{args.ray_port}",
                       redis_address=redis_address, namespace=args.namespace, env=child_env,
                       redis_password=password, redis_username=username, num_cpus=0, log_path=data / "ray-head.log",
                       metrics_export_port=args.metrics_port or None, auth_token_path=token_path,
                       dashboard_agent_port=free_port())
        # The production topology (docs/topology.md): a head that runs no councils and no engines (num-cpus 0,
        # no councils_* resources) and a worker node that offers every resource they require.
        workers = [RayWorker(head=head, env=child_env, log_path=data / "ray-worker.log", num_cpus=args.num_cpus,
                             resources=topology.node_resources(), metrics_export_port=free_port(),
                             dashboard_agent_port=free_port())]
        head.start()
        log(f"Ray head on {head.gcs_address} (GCS tables in Valkey, namespace {args.namespace!r}; num-cpus 0: "
            f"GCS, dashboard, Serve controller); dashboard {head.dashboard_url}"
            + (f"; metrics {head.metrics_url}" if head.metrics_url else ""))
        if token_path:
            log(f"Ray token authentication on: the token is in {token_path} (0600); for ray/serve CLI calls "
                f"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token_path}")
        wait_for(head.answers, 180, "Ray dashboard")
        for worker in workers:
            worker.start()
        wait_for(lambda: alive_nodes(head) >= 1 + len(workers), 180, "Ray worker node",
                 on_wait=lambda: check_started(workers))
        for worker in workers:
            log(f"Ray {worker.name} node joined ({', '.join(sorted(worker.resources or {}))}"
                + (f"; metrics {worker.metrics_url}" if worker.metrics_url else "") + f"; log {worker.log_path})")
        serve_deploy(config_path, head.dashboard_url, child_env)
        log(f"deployed {config_path}; waiting for {ready_url}")
        started = time.time()

        def progress():
            if not head.alive():
                raise RuntimeError(f"Ray head exited; see {head.log_path}")
            failed = serve_failures(head.dashboard_url, head.auth_headers())
            if failed:  # a bad config never becomes ready: say why instead of waiting
                raise RuntimeError(f"serve deploy failed:\n{failed}")
            if int(time.time() - started) % 15 == 0:
                log(f"... {int(time.time() - started)}s: {http_get(ready_url)[1][:200]}")

        wait_for(lambda: http_get(ready_url)[0] == 200, args.ready_timeout, "service", on_wait=progress)
        log(f"READY on http://127.0.0.1:{args.http_port}  (took {time.time() - started:.0f}s)")
        log(f"try: curl -s -X POST 'http://127.0.0.1:{args.http_port}/v1/deliberations?wait=true' "
            "-H 'content-type: application/json' -d '{\"role\":\"DEV\",\"task\":\"Write a Python function "
            "that checks whether a string is a palindrome.\"}'")
        log("Ctrl-C stops everything this started")
        supervisor = Supervisor(head, valkey, workers=workers)
        while True:
            time.sleep(1)
            supervisor.check()
    except KeyboardInterrupt:
        log("stopping")
        return 0
    except (RuntimeError, OSError, ValueError, yaml.YAMLError, subprocess.CalledProcessError) as exc:
        log(f"ERROR: {type(exc).__name__}: {exc}")
        return 1
    finally:
        stopping = True  # from here on a signal is only logged: the cleanup runs to its end
        stop_started(head, valkey, workers)
        log("stopped")


if __name__ == "__main__":
    sys.exit(main())
