"""The `make run` launcher's exit paths and restarts, without Ray: nothing it started survives any way it
ends (a bad config, a Valkey that does not come up, a second Ctrl-C during the shutdown, a SIGKILLed
`ray start` whose children hold the ports), and the supervisor's restarts back off and say why.

The launcher runs for real in a subprocess; only the Ray head is a stand-in (one sleeping process in its
own session, stopped slowly on demand) so that these run in seconds and need no cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from councils_local.valkey_server import ValkeyProcess, free_port
from tests.ray_cluster import ROOT, wait_until

pytestmark = pytest.mark.valkey

DRIVER = textwrap.dedent("""
    import os, subprocess, sys, time

    import actors.model_prep
    import councils_local.launcher as L
    from councils_local.launch import start as S
    from councils_local.processes import OWNER_ENV, log
    from councils_local.ray_nodes import RayHead, RayWorker

    actors.model_prep.ensure_dev_model = lambda: "(stand-in model)"
    TAG = os.environ["FAKE_HEAD_TAG"]


    class FakeHead(RayHead):
        def _start(self):
            env = {**os.environ, OWNER_ENV: getattr(self, "marker", "")}
            self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", TAG], env=env,
                                         start_new_session=True)

        def answers(self):
            return True

        def stop(self, timeout_s=20):
            log("stand-in head: stopping slowly")
            time.sleep(float(os.environ.get("FAKE_HEAD_STOP_S", "0")))
            super().stop(timeout_s)


    class FakeWorker(RayWorker):  # make run's worker node (docs/topology.md), a stand-in too
        def _start(self):
            FakeHead._start(self)

        def answers(self):
            return True


    S.RayHead = FakeHead
    S.RayWorker = FakeWorker
    S.alive_nodes = lambda head: 99
    S.serve_deploy = lambda *args, **kwargs: log("stand-in deploy")
    sys.exit(L.main(sys.argv[1:]))
""")


def leftovers(tag: str) -> list[psutil.Process]:
    """Processes whose command line names `tag` (our temp dir): what a launcher run left behind."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and any(tag in arg for arg in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def reap(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


class LauncherRun:
    def __init__(self, tmp_path: Path, config: Path, stop_s: float = 0.0):
        self.tag = str(tmp_path)
        self.log = tmp_path / "launcher.log"
        driver = tmp_path / "driver.py"
        driver.write_text(DRIVER)
        env = {**{k: v for k, v in os.environ.items() if k != "COUNCILS_VALKEY_URL"}, "FAKE_HEAD_TAG": self.tag,
               "FAKE_HEAD_STOP_S": str(stop_s), "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(driver), "--config", str(config), "--data-dir", str(tmp_path / "data"),
                 "--valkey-port", str(free_port()), "--ray-port", str(free_port()),
                 "--dashboard-port", str(free_port()), "--http-port", str(free_port()), "--metrics-port", "0",
                 "--ready-timeout", "120"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text()

    def wait_logged(self, line: str, timeout_s: float = 60) -> None:
        wait_until(lambda: line in self.text() or self.proc.poll() is not None, timeout_s, 0.1, what=line)
        assert line in self.text(), self.text()


@pytest.fixture
def run_launcher(tmp_path):
    runs: list[LauncherRun] = []

    def start(config: Path, **kw) -> LauncherRun:
        runs.append(LauncherRun(tmp_path, config, **kw))
        return runs[-1]

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        reap(leftovers(run.tag))


def test_a_bad_config_leaves_nothing_running(tmp_path, run_launcher):
    bad = tmp_path / "bad.yaml"
    bad.write_text("applications: [unclosed\n")
    run = run_launcher(bad)
    assert run.proc.wait(120) == 1, run.text()
    assert "ERROR" in run.text() and "stopped" in run.text()
    time.sleep(0.5)
    assert leftovers(run.tag) == [], run.text()


def test_a_second_ctrl_c_during_the_shutdown_does_not_cut_it_short(tmp_path, run_launcher):
    run = run_launcher(ROOT / "configs" / "local.yaml", stop_s=3)
    run.wait_logged("waiting for http://")
    assert len(leftovers(run.tag)) >= 2  # Valkey (its data dir) and the stand-in head
    os.kill(run.proc.pid, signal.SIGINT)
    run.wait_logged("stand-in head: stopping slowly")
    os.kill(run.proc.pid, signal.SIGINT)  # impatient: a second Ctrl-C while the head stops
    time.sleep(0.3)
    os.kill(run.proc.pid, signal.SIGTERM)  # and a SIGTERM
    assert run.proc.wait(60) == 0, run.text()
    assert "already stopping" in run.text() and run.text().rstrip().endswith("stopped")
    time.sleep(0.5)
    assert leftovers(run.tag) == [], run.text()


def test_valkey_that_does_not_come_up_in_time_is_not_left_running(tmp_path):
    server = ValkeyProcess(tmp_path / "v")
    with pytest.raises(TimeoutError):
        server.start(timeout_s=0)
    assert server.proc is not None and server.proc.poll() is not None
    assert leftovers(str(tmp_path)) == []


CHILDREN = textwrap.dedent("""
    import subprocess, sys, time
    tag = sys.argv[1]
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", tag])  # stays in the group
    subprocess.Popen(["setsid", sys.executable, "-c", "import time; time.sleep(600)", tag])  # leaves it
    print("up", flush=True)
    time.sleep(600)
""")


def test_stopping_a_sigkilled_parent_still_stops_its_children(tmp_path):
    """`ray start --block` SIGKILLed: gcs_server, raylet and workers live on, re-parented, holding the ports.
    kill_tree (RayHead.stop) finds them by process group, session and the launcher's marker."""
    from councils_local import processes

    marker = "test-" + tmp_path.name
    parent = subprocess.Popen([sys.executable, "-c", CHILDREN, str(tmp_path)], stdout=subprocess.PIPE,
                              env={**os.environ, processes.OWNER_ENV: marker}, start_new_session=True)
    try:
        assert parent.stdout.readline().strip() == b"up"
        wait_until(lambda: len(leftovers(str(tmp_path))) == 3, 10, 0.05, what="parent and two children")
        parent.kill()
        parent.wait()  # reaped, as RayHead.alive() does: the pid is gone, its children are not
        assert len(leftovers(str(tmp_path))) == 2
        processes.kill_tree(parent.pid, timeout_s=5, marker=marker)
        assert leftovers(str(tmp_path)) == []
    finally:
        reap(leftovers(str(tmp_path)))


class _Proc:
    def __init__(self, code: int | None):
        self.code = code

    def poll(self):
        return self.code


class _Dead:
    """A process that dies again right after every start (a GCS that cannot come up)."""

    def __init__(self):
        self.proc = _Proc(-signal.SIGKILL)
        self.starts = 0

    def alive(self) -> bool:
        return False

    def start(self):
        self.starts += 1

    def restart_if_dead(self):
        self.start()
        return True


def test_restarts_back_off_exponentially_up_to_a_cap_and_say_why():
    from councils_local.supervisor import Backoff, Supervisor

    now = [0.0]
    said: list[str] = []
    head = _Dead()
    supervisor = Supervisor(head, None, say=said.append, clock=lambda: now[0],
                            backoff=lambda: Backoff(base_s=1, cap_s=8, stable_s=60))
    restarted_at = []
    while now[0] < 40:
        before = head.starts
        supervisor.check()
        if head.starts > before:
            restarted_at.append(now[0])
        now[0] += 0.5
    # Checked every 0.5 s, it dies right after each start: seen dead 0.5 s later, then restarted after
    # 0, 1, 2, 4, 8 (the cap), 8... seconds.
    assert restarted_at[:7] == [0.0, 1.5, 4.0, 8.5, 17.0, 25.5, 34.0]
    assert supervisor.restarts["head"] == len(restarted_at)
    assert "Ray head died (killed by SIGKILL); restarting it on the same port and GCS namespace now" in said
    assert any("in 8s (attempt 5 in a row)" in line for line in said)
    # After it stayed up for stable_s, the next death is restarted at once again.
    alive = Backoff(base_s=1, cap_s=8, stable_s=60)
    assert [alive.next_delay(0), alive.next_delay(1)] == [0.0, 1.0]
    alive.started(2)
    assert alive.next_delay(100) == 0.0


def test_options_default_to_the_environment_and_the_command_line_wins(capsys):
    from councils_local.launch.options import DEFAULT_CONFIG, DEFAULT_DATA_DIR, parse
    from serve_app.settings import EnvSettings

    plain = parse([], EnvSettings.from_env({}))
    assert (plain.config, plain.data_dir, plain.valkey_port, plain.ray_port, plain.dashboard_port,
            plain.metrics_port, plain.http_port, plain.namespace, plain.num_cpus, plain.ready_timeout,
            plain.ray_auth) == (DEFAULT_CONFIG, DEFAULT_DATA_DIR, 6389, 6380, 8265, 8080, None, "councils-local",
                                None, 900, "token")
    env = EnvSettings.from_env({"COUNCILS_DATA_DIR": "/srv/councils", "COUNCILS_VALKEY_PORT": "7001",
                                "COUNCILS_METRICS_PORT": "9100", "COUNCILS_GCS_NAMESPACE": "ns",
                                "COUNCILS_RAY_AUTH": "disabled"})
    from_env = parse([], env)
    assert (from_env.data_dir, from_env.valkey_port, from_env.metrics_port, from_env.namespace,
            from_env.ray_auth) == (Path("/srv/councils"), 7001, 9100, "ns", "disabled")
    given = parse(["--data-dir", "d", "--valkey-port", "7002", "--metrics-port", "0", "--namespace=other",
                   "--ray-auth", "token", "--http-port", "8001", "--num-cpus", "2", "--ready-timeout", "1.5",
                   "--config", "c.yaml"], env)
    assert (given.data_dir, given.valkey_port, given.metrics_port, given.namespace, given.ray_auth, given.http_port,
            given.num_cpus, given.ready_timeout, given.config) == (Path("d"), 7002, 0, "other", "token", 8001, 2,
                                                                   1.5, Path("c.yaml"))
    for bad in (["--ray-auth", "none"], ["--valkey-port", "x"], ["--no-such-option"]):
        with pytest.raises(SystemExit) as exit_:
            parse(bad, env)
        assert exit_.value.code == 2, bad
    with pytest.raises(SystemExit) as exit_:
        parse(["--help"], env)
    assert exit_.value.code == 0 and "--ray-auth" in capsys.readouterr().out
