"""End to end, as a user runs it: the `make run` launcher on the real vLLM CPU engine (SmolLM2-135M).

Starts the launcher (embedded Valkey, Valkey-backed Ray head, `serve deploy configs/local.yaml`),
deliberates over HTTP, stops it with Ctrl-C (SIGINT), starts it again on the same data directory and
checks that every council came back from Valkey unchanged, with no init step.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serve_app.valkey_server import free_port
from tests.ray_cluster import LOCK_PATH, ROOT, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROLES = {"DEV", "QA", "ARCHITECT", "DEVOPS", "DATA"}


class Launcher:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.ports = {"valkey": free_port(), "ray": free_port(), "dashboard": free_port(), "http": free_port(),
                      "metrics": free_port()}
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / "launcher.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def gcs(self) -> str:
        return f"127.0.0.1:{self.ports['ray']}"

    def start(self, timeout_s: float = 900) -> None:
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        out = open(self.log, "ab")
        env = {k: v for k, v in os.environ.items() if k != "COUNCILS_VALKEY_URL"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serve_app.launcher", "--config", str(ROOT / "configs" / "local.yaml"),
             "--data-dir", str(self.data_dir), "--valkey-port", str(self.ports["valkey"]),
             "--ray-port", str(self.ports["ray"]), "--dashboard-port", str(self.ports["dashboard"]),
             "--http-port", str(self.ports["http"]), "--metrics-port", str(self.ports["metrics"])],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        out.close()
        wait_until(lambda: self._ready(), timeout_s, interval=2, what="launcher READY")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"launcher exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        return "READY on" in self.log.read_text()[self.log_offset:]

    def ctrl_c(self, timeout_s: float = 120) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.ctrl_c()


def leftover_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    lock = open(LOCK_PATH, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one Ray cluster at a time on this machine
    run = Launcher(tmp_path_factory.mktemp("make-run"))
    try:
        run.start()
        yield run
    finally:
        run.kill()
        lock.close()


def test_make_run_deliberates_on_vllm_and_restores_after_restart(launcher):
    http = httpx.Client(base_url=launcher.url, timeout=600)
    councils = http.get("/v1/councils").json()["councils"]
    assert {c["role"] for c in councils} == ROLES
    assert all(len(c["agents"]) == 3 for c in councils)

    # A council created through the API, to be restored after the restart.
    r = http.put("/v1/councils/SEC", json={"agents": [
        {"id": "sec-1", "engine": "smollm2", "persona": "You are a security reviewer.", "max_tokens": 32},
        {"id": "sec-2", "engine": "smollm2", "persona": "You are a pragmatic engineer.", "max_tokens": 32}]})
    assert r.status_code == 201, r.text
    sec = r.json()

    r = http.post("/v1/deliberations", params={"wait": "true"}, json={
        "role": "DEV", "task": "Write a Python function is_palindrome(s) that ignores case.",
        "max_tokens": 48, "constraints": {"requirements": ["ignore case"]}})
    assert r.status_code == 200, r.text
    rec = r.json()
    res = rec["result"]
    assert rec["status"] == "completed"
    assert len(res["proposals"]) == 3 and [p["rank"] for p in res["proposals"]] == [1, 2, 3]
    for p in res["proposals"]:
        assert p["content"].strip()  # model-written
        assert len(p["revisions"]) == 1 and p["revisions"][0]["critique"].strip()
        assert {c["name"] for c in p["checks"]} >= {"non_empty", "code_blocks_parse", "requirements_addressed"}
        assert 0.0 <= p["score"] <= 1.0
    assert res["winner_id"] == res["proposals"][0]["author"]
    assert res["duration_s"] > 0 and res["usage"]["completion_tokens"] > 0 and res["usage"]["prompt_tokens"] > 0

    from ray.util.state import list_actors

    import ray

    ray.init(address=launcher.gcs, log_to_driver=False)
    try:
        alive = {a.name for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)}
    finally:
        ray.shutdown()
    assert {f"council-{r}" for r in ROLES} | {"council-SEC", "engine-smollm2"} <= alive

    # Ctrl-C stops everything the launcher started.
    assert launcher.ctrl_c() == 0
    time.sleep(2)
    assert leftover_processes(f"councils-ray-{launcher.ports['ray']}") == []
    assert leftover_processes(f"--port {launcher.ports['valkey']}") == []

    # Again: every council is back from Valkey, unchanged, the PUT one included.
    launcher.start()
    http = httpx.Client(base_url=launcher.url, timeout=600)
    after = {c["role"]: c for c in http.get("/v1/councils").json()["councils"]}
    assert after["SEC"] == sec
    assert {role: after[role] for role in ROLES} == {c["role"]: c for c in councils}
    assert http.get(f"/v1/deliberations/{rec['id']}").json()["result"] == res
