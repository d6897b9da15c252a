"""An isolated local Ray cluster for tests: own ports, own temp dir, GCS tables in a real Valkey.

It is started the same way `make run` starts one (councils_local.ray_nodes.RayHead: `ray start --head
--block` with RAY_REDIS_ADDRESS and RAY_external_storage_namespace) and stopped by PID, so a test
can also kill and restart the head the way a crash would.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from councils_local.processes import http_get, wait_for
from councils_local.ray_nodes import RayHead, RayWorker
from councils_local.supervisor import Supervisor
from councils_local.valkey_server import ValkeyProcess, free_port
from actors.topology import node_resources

ROOT = Path(__file__).resolve().parent.parent
# Two cores: one test cluster at a time on this machine, whichever process (or person) starts it.
LOCK_PATH = "/tmp/councils-ray-tests.lock"

STOP_GRACE_S = 2
# How often the helpers ask whether a cluster is up or ready (launcher.wait_for's default is 1 s: each wait
# overshot by half a second on average, a few dozen times per make test).
POLL_S = 0.2


class LocalCluster:
    def __init__(self, workdir: Path, head_resources: dict[str, float] | None = None):
        self.workdir = workdir
        # One node plays head and worker by default: it offers the resources councils, engines and verification
        # tasks require (actors/topology.py). `make run` splits them (tests/test_topology_make_run.py).
        self.head_resources = node_resources() if head_resources is None else head_resources
        self.workers: list[RayWorker] = []
        self.valkey = ValkeyProcess(workdir / "valkey")
        self.namespace = f"test-{uuid.uuid4().hex[:8]}"
        # Unix socket paths must stay short: a temp dir of our own under /tmp.
        self.temp_dir = tempfile.mkdtemp(prefix="cr-ray-", dir="/tmp")
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.head: RayHead | None = None

    def start(self) -> "LocalCluster":
        self._lock = open(LOCK_PATH, "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.valkey.start()
        self.head = RayHead(
            port=free_port(), dashboard_port=free_port(), temp_dir=self.temp_dir,
            redis_address=self.valkey.address, redis_password=self.valkey.password, namespace=self.namespace,
            env={"PYTHONPATH": str(ROOT), "COUNCILS_VALKEY_URL": self.valkey.url,
                 "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
                 "RAY_SERVE_ENABLE_TASK_EVENTS": "0"},
            num_cpus=4, log_path=self.workdir / "ray-head.log", metrics_export_port=self.metrics_port,
            resources=self.head_resources,
        )
        self.head.start()
        wait_for(self.head.answers, 180, "Ray head", interval=POLL_S)
        return self

    def add_worker(self, name: str, resources: dict[str, float], num_cpus: int = 1) -> RayWorker:
        """A second raylet on this machine joined to the head (as `make run` starts its worker node)."""
        worker = RayWorker(head=self.head, env=dict(self.head.env), log_path=self.workdir / f"ray-{name}.log",
                           num_cpus=num_cpus, resources=resources, metrics_export_port=free_port(),
                           dashboard_agent_port=free_port(), name=name)
        worker.start()
        self.workers.append(worker)
        return worker

    def supervise(self) -> Supervisor:
        """Heal crashes in the background, as `make run` does."""
        self.supervisor = Supervisor(self.head, self.valkey, say=lambda m: print(f"[supervisor] {m}"))
        self._supervising = threading.Event()

        def loop():
            while not self._supervising.wait(0.5):
                try:
                    self.supervisor.check()
                except Exception as exc:  # keep trying, as the launcher would
                    print(f"[supervisor] {exc}")

        threading.Thread(target=loop, daemon=True).start()
        return self.supervisor

    def restart_head(self) -> None:
        self.head.restart()
        wait_for(self.head.answers, 180, "Ray head", interval=POLL_S)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def wait_ready(self, timeout_s: float = 180) -> None:
        wait_for(lambda: http_get(f"{self.url}/readyz")[0] == 200, timeout_s, "ingress /readyz", interval=POLL_S)

    def stop(self) -> None:
        if getattr(self, "_supervising", None):
            self._supervising.set()
        # A test cluster needs no graceful stop (its data goes with its temp dir): SIGTERM, then SIGKILL after
        # STOP_GRACE_S. With the launcher's 20 s grace every test cluster's teardown took 22 s.
        for worker in self.workers:
            worker.stop(timeout_s=STOP_GRACE_S)
        if self.head:
            self.head.stop(timeout_s=STOP_GRACE_S)
        self.valkey.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if getattr(self, "_lock", None):
            self._lock.close()  # releases the flock
            self._lock = None


def connect(cluster: LocalCluster) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address=cluster.head.gcs_address, namespace="councils", log_to_driver=False)


def wait_until(predicate, timeout_s: float = 60, interval: float = 0.5, what: str = "condition"):
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # keep polling through restarts
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout_s}s (last: {last!r})")


ROLES = ["DEV", "QA", "ARCHITECT", "DEVOPS", "DATA"]


def app_config(valkey_url: str, prefix: str = "councils:"):
    from actors.models.config import AppConfig

    return AppConfig.model_validate({
        "valkey_url": valkey_url,
        "key_prefix": prefix,
        "engines": [{"name": "fake", "model": "test-engine"}],
        # One draft per agent: these suites count the stage events of that shape. Drafting in waves is tested in
        # test_protocol.py and, with the configs' default of 4 drafts on real vLLM, in test_e2e_make_run.py.
        "default_councils": {"engine": "fake", "agents_per_council": 3, "rounds": 1, "drafts_per_agent": 1,
                             "max_tokens": 32},
    })


def start_fake_engine(delay_s: float = 0.0):
    """The deterministic engine under the engine's actor name, before the ingress reconciles (it then finds it)."""
    import ray

    from actors.engine_hosting import engine_actor_name
    from tests.fake_engine import FakeEngine

    return ray.remote(FakeEngine).options(
        name=engine_actor_name("fake"), namespace="councils", lifetime="detached", max_restarts=-1,
        max_concurrency=64, num_cpus=0, get_if_exists=True,
    ).remote({"name": "fake"}, delay_s)


def deploy(cluster: LocalCluster, prefix: str = "councils:") -> None:
    from ray import serve

    from serve_app.builder import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": cluster.http_port})
    serve.run(build_app(app_config(cluster.valkey.url, prefix)), name="councils", route_prefix="/")
    cluster.wait_ready()


@contextmanager
def running_cluster(workdir: Path, *, engine_delay_s: float = 0.0, supervise: bool = False, deploy_app=deploy):
    """A started cluster, the driver connected, the test engine up and the app deployed (`deploy_app(cluster)`).

    Stopped on exit, also when set-up fails: a test module never leaves a cluster behind.
    """
    import ray

    c = LocalCluster(workdir)
    try:
        c.start()
        if supervise:
            c.supervise()
        connect(c)
        start_fake_engine(engine_delay_s)
        deploy_app(c)
        yield c
    finally:
        ray.shutdown()
        c.stop()
