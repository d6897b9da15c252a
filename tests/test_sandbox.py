"""Real escape attempts: through run_verifiers (proposal code and constraints.tests, with the runner's audit
hook) and straight at run_sandboxed (no hook: the sandbox alone must contain them). Each must end as a
failed check or a contained result, in bounded time, and leave nothing behind."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
import uuid

import pytest

from actors.models.councils import ScoringSpec
from actors.models.requests import Constraints
from actors.verifiers import isolation, run_verifiers, sandbox
from actors.verifiers.sandbox import SandboxLimits, run_sandboxed

pytestmark = pytest.mark.unit

TASK = "Write a Python function answer() that returns 42."
TESTS = "assert answer() == 42\n"
BOUND_S = 15  # any attempt ends well within this


def verify(code: str, tests: str = TESTS):
    start = time.monotonic()
    checks = run_verifiers(f"The answer function:\n```python\n{code}\n```\n", TASK, Constraints(tests=tests),
                           ["python"], ScoringSpec())
    assert time.monotonic() - start < BOUND_S
    return next(c for c in checks if c.name == "python.tests")


def leftover_processes() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            with open(f"/proc/{pid}/stat", "rb") as f:
                zombie = f.read().rpartition(b")")[2].split()[0] == b"Z"
        except OSError:
            continue
        if isolation.UID_BASE <= uid < isolation.UID_BASE + isolation.UID_SLOTS and not zombie:
            found.append(int(pid))
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind(monkeypatch):
    made = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made.append(mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(sandbox.tempfile, "mkdtemp", recording_mkdtemp)
    yield
    assert made and not any(os.path.exists(d) for d in made), "the sandbox's temporary directory is left"
    if os.geteuid() == 0:
        assert leftover_processes() == []


def test_a_correct_answer_passes():
    assert verify("def answer():\n    return 42").passed


def test_infinite_loop_is_killed_by_the_cpu_limit(monkeypatch):
    # A wall clock long enough that the CPU limit always comes first, even on a loaded machine (two CPU
    # seconds can take more than the default five wall-clock seconds when the cores are shared).
    from dataclasses import replace

    from actors.verifiers import python as python_verifier

    monkeypatch.setattr(python_verifier, "TEST_LIMITS", replace(python_verifier.TEST_LIMITS, wall_s=BOUND_S - 2))
    t = verify("def answer():\n    while True:\n        pass")
    assert t.failed and "CPU time limit" in t.message and (t.tests_passed, t.tests_total) == (0, 1)


def test_sleeping_forever_times_out():
    t = verify("import time\ndef answer():\n    time.sleep(600)")
    assert t.failed and "timed out after" in t.message


def test_fork_bomb_fails():
    t = verify("import os\nwhile True:\n    os.fork()\ndef answer():\n    return 42")
    assert t.failed


def test_huge_allocation_fails():
    t = verify("def answer():\n    return len(bytearray(10**10))")
    assert t.failed and "MemoryError" in t.message


def test_shell_command_leaves_no_file():
    marker = f"/tmp/pwned-{uuid.uuid4().hex}"
    t = verify(f"import os\nos.system('touch {marker}')\n"
               f"def answer():\n    return 42 if os.path.exists('{marker}') else 0")
    assert t.failed and "os.system is not allowed" in t.message
    assert not os.path.exists(marker)


@pytest.mark.parametrize("path", ["/root/pwned-{}", "/tmp/pwned-{}", "/work/pwned-{}"])
def test_writes_outside_the_work_directory_fail(path):
    target = path.format(uuid.uuid4().hex)
    t = verify(f"def answer():\n    open({target!r}, 'w').write('x')\n    return 42")
    assert t.failed and "outside the working directory" in t.message
    assert not os.path.exists(target)


def test_writing_in_the_work_directory_is_fine():
    code = "def answer():\n    open('scratch.txt', 'w').write('42')\n    return int(open('scratch.txt').read())"
    assert verify(code).passed


@pytest.fixture
def listener():
    """A server in the test process: the sandboxed code must never reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_network_calls_do_not_arrive(listener):
    port, accepted = listener
    connect = f"socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    t = verify(f"import socket\ndef answer():\n    {connect}\n    return 42")
    assert t.failed and "sandbox: socket." in t.message
    r = run_sandboxed([sys.executable, "-I", "-c", f"import socket; {connect}; print('connected')"], {})
    assert "connected" not in r.stdout
    if isolation.namespaces_available():
        assert r.isolated_network and "Network is unreachable" in r.stderr
    time.sleep(0.3)
    assert accepted == []


def test_environment_secrets_are_not_inherited(monkeypatch):
    monkeypatch.setenv("COUNCILS_API_TOKEN", "s3cret-token")
    monkeypatch.setenv("VALKEY_PASSWORD", "s3cret-password")
    t = verify("import os\ndef answer():\n    return 42 if 's3cret' in str(os.environ) else 0")
    assert t.failed and "s3cret" not in t.message
    r = run_sandboxed(["sh", "-c", "env; cat /proc/1/environ"], {})
    assert "s3cret" not in r.stdout + r.stderr and "HOME=" in r.stdout


def test_huge_output_is_cut_and_killed():
    t = verify("import sys\ndef answer():\n    sys.stderr.write('x' * 10**8)\n    return 42")
    assert t.failed and "output over" in t.message
    r = run_sandboxed(["yes"], {})
    assert r.status == "killed" and "output over 64 KiB" in r.message
    assert r.stdout.endswith("[... output truncated at 64 KiB]")


# --- the sandbox alone, without the runner's audit hook ----------------------------------------------

def test_python_fork_bomb_is_contained_without_the_hook():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    r = run_sandboxed([sys.executable, "-I", "-c", bomb], {}, limits=SandboxLimits(wall_s=3))
    assert r.status in ("timeout", "killed") and r.duration_s < 5


def test_shell_escapes_are_contained_without_the_hook():
    marker = f"pwned-{uuid.uuid4().hex}"
    r = run_sandboxed(["sh", "-c", f"id -u; touch /tmp/{marker}; echo x > /root/{marker}; setsid sleep 60 &"], {})
    assert r.status == "ok" and r.stdout.split()[0] != "0"
    assert not os.path.exists(f"/tmp/{marker}") and not os.path.exists(f"/root/{marker}")


def test_files_are_given_and_limits_hold():
    r = run_sandboxed(["sh", "-c", "cat in.txt; head -c 50000000 /dev/zero > big; stat -c ' %s' big"],
                      {"in.txt": "hello"}, limits=SandboxLimits(fsize_mb=1))
    assert r.stdout.split() == ["hello", str(1 << 20)] and "File size limit exceeded" in r.stderr
    refused = run_sandboxed(["true"], {"../x": "no"})
    assert refused.status == "error" and "must be relative" in refused.message


def test_without_namespaces_it_still_runs_and_says_so(monkeypatch):
    monkeypatch.setattr(isolation, "namespaces_available", lambda: False)
    r = run_sandboxed(["sh", "-c", "echo hi; id -u; setsid sleep 60 &"], {})
    assert r.status == "ok" and r.stdout.startswith("hi") and r.isolated_network is False
    if os.geteuid() == 0:
        assert r.stdout.split()[1] != "0"
    r = run_sandboxed(["sh", "-c", "sleep 60"], {}, limits=SandboxLimits(wall_s=1))
    assert r.status == "timeout" and r.message == "timed out after 1 s (wall clock)"
