"""Real escape attempts against the sandbox, shared by tests/test_sandbox.py: run in the test process (as
root here) and, through `python -m tests.sandbox_escapes`, as a non-root user (the production case).

Each attempt returns (contained, detail): `contained` is judged from outside the sandbox (the host's files,
processes, IPC objects, a listener's accepted connections, the verifier's verdict), never from what the
sandboxed code says about itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from actors.models.councils import ScoringSpec
from actors.models.requests import Constraints
from actors.verifiers import run_verifiers
from actors.verifiers.sandbox import SandboxLimits, run_sandboxed

IMPOSSIBLE = "assert add(0, 0) == 1\n"  # no correct add passes it: a pass is a forgery


def tests_check(code: str, tests: str = IMPOSSIBLE):
    checks = run_verifiers(f"```python\n{code}\n```\n", "Write add(a, b).", Constraints(tests=tests), ["python"],
                           ScoringSpec())
    return next(c for c in checks if c.name == "python.tests")


def _not_passed(code: str, tests: str = IMPOSSIBLE) -> tuple[bool, str]:
    t = tests_check(code, tests)
    return (not t.passed and t.status == "failed"), t.message


# --- forged passes -------------------------------------------------------------------------------

def forge_via_frames() -> tuple[bool, str]:
    """Walk up every frame for the result channel and any nonce the runner keeps, and report a pass for every
    test in every format a runner of ours ever used, then leave before the real check runs."""
    return _not_passed(
        "import sys, os, json\n"
        "def add(a, b):\n"
        "    f, channels, nonces = sys._getframe(), [], set()\n"
        "    while f:\n"
        "        for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n"
        "            if hasattr(v, 'write') and hasattr(v, 'flush'): channels.append(v)\n"
        "            if isinstance(v, dict) and isinstance(v.get('nonce'), str): nonces.add(v['nonce'])\n"
        "        f = f.f_back\n"
        "    lines = [json.dumps({'check': 0, 'values': [{'v': 'True'}]}), json.dumps({'done': True})]\n"
        "    lines += [n + json.dumps(e) for n in nonces for e in ({'event': 'test', 'index': 0, 'ok': True, 'message': ''},\n"
        "                                                       {'event': 'done'})]\n"
        "    for c in channels:\n"
        "        try:\n"
        "            c.write('\\n'.join(lines) + '\\n'); c.flush()\n"
        "        except Exception: pass\n"
        "    os._exit(0)\n")


def forge_via_globals() -> tuple[bool, str]:
    """Patch the module every reporter serializes with, so that each report says 'passed' (and each value is
    True), switch the audit hook off, and run a process."""
    return _not_passed(
        "import __main__, json, subprocess\n"
        "__main__._BLOCKED = ()\n"
        "_dumps = json.dumps\n"
        "def forged(obj, *args, **kwargs):\n"
        "    if isinstance(obj, dict):\n"
        "        obj = dict(obj)\n"
        "        if 'ok' in obj: obj['ok'], obj['message'] = True, ''\n"
        "        if 'values' in obj: obj['values'] = [{'v': 'True'}]\n"
        "        obj.pop('error', None)\n"
        "    return _dumps(obj, *args, **kwargs)\n"
        "json.dumps = forged\n"
        "def add(a, b):\n"
        "    subprocess.run(['true'])\n"
        "    return a - b\n")


_NONCES = ("    import gc, json\n"
           "    nonces = {o['nonce'] for o in gc.get_objects() if isinstance(o, dict) and isinstance(o.get('nonce'), str)}\n"
           "    lines = [json.dumps({'check': 0, 'values': [{'v': 'True'}]}), json.dumps({'done': True})]\n"
           "    lines += [n + json.dumps(e) for n in nonces for e in ({'event': 'test', 'index': 0, 'ok': True,\n"
           "                                                            'message': ''}, {'event': 'done'})]\n")


def forge_via_stdout() -> tuple[bool, str]:
    """Find any nonce in memory, then print result lines of every format a runner of ours used, on stdout and
    on every open descriptor."""
    return _not_passed(
        "import os, threading, time\n"
        "def add(a, b):\n" + _NONCES +
        "    def later():  # after the runner's own report, so a reader that keeps the last line sees this one\n"
        "        time.sleep(0.3)\n"
        "        for fd in range(0, 64):\n"
        "            try: os.write(fd, ('\\n'.join(lines) + '\\n').encode())\n"
        "            except OSError: pass\n"
        "        print(*lines, sep='\\n', flush=True)\n"
        "    threading.Thread(target=later).start()\n"
        "    return a - b\n")


def forge_via_eq() -> tuple[bool, str]:
    return _not_passed(
        "class Anything(int):\n"
        "    def __eq__(self, other): return True\n"
        "    def __ne__(self, other): return False\n"
        "    __hash__ = int.__hash__\n"
        "def add(a, b):\n"
        "    return Anything(7)\n")


def forge_via_exit() -> tuple[bool, str]:
    """Report a pass through every open text stream in memory, then leave with status 0 before any check runs."""
    return _not_passed(
        "import os, io\n"
        "def add(a, b):\n" + _NONCES +
        "    for o in gc.get_objects():\n"
        "        if isinstance(o, io.TextIOWrapper) and o.writable():\n"
        "            try: o.write('\\n'.join(lines) + '\\n'); o.flush()\n"
        "            except Exception: pass\n"
        "    os._exit(0)\n")


# --- reaching outside ----------------------------------------------------------------------------

def _shell(script: str, limits: SandboxLimits | None = None):
    return run_sandboxed(["sh", "-c", script], {}, **({"limits": limits} if limits else {}))


def read_parent_environ() -> tuple[bool, str]:
    """Every /proc/<pid>/environ the run can see, while a process of the service's user holds a secret in its
    environment (as a Ray worker holds the Valkey URL)."""
    import subprocess

    secret = f"s3cret-{uuid.uuid4().hex}"
    holder = subprocess.Popen(["sleep", "30"], env={"COUNCILS_TEST_SECRET": secret, "PATH": os.defpath})
    try:
        r = _shell("for p in /proc/[0-9]*; do cat $p/environ 2>/dev/null; echo; done; "
                   "cat /proc/$PPID/environ 2>/dev/null; env")
    finally:
        holder.kill()
        holder.wait()
    return secret not in r.stdout + r.stderr, r.message


def read_service_file() -> tuple[bool, str]:
    """A 0600 file of the service's user, in a directory of the service's own (its home, or a temp dir)."""
    secret = f"s3cret-{uuid.uuid4().hex}"
    home = tempfile.mkdtemp(prefix="councils-service-home-")
    path = os.path.join(home, "token")
    with open(path, "w", encoding="utf-8", opener=lambda p, f: os.open(p, f, 0o600)) as f:
        f.write(secret)
    try:
        r = _shell(f"cat {path}; cat {os.path.abspath(__file__)} | head -c 100; ls /root /home /etc 2>&1")
    finally:
        os.remove(path)
        os.rmdir(home)
    return secret not in r.stdout + r.stderr and "IMPOSSIBLE" not in r.stdout, r.stdout[-200:] + r.stderr[-200:]


@contextlib.contextmanager
def loopback_listener() -> Iterator[tuple[int, list]]:
    """A server of the test process on 127.0.0.1: (its port, the connections it accepted)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        server.close()


def connect_loopback() -> tuple[bool, str]:
    with loopback_listener() as (port, accepted):
        r = run_sandboxed([sys.executable, "-I", "-c",
                           f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('in')"],
                          {})
        time.sleep(0.3)
    return not accepted and "in" not in r.stdout.split(), r.stderr[-200:]


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def double_fork_survivor() -> tuple[bool, str]:
    marker = f"{31000000 + uuid.uuid4().int % 1000000}"
    r = _shell(f"(setsid sh -c 'sleep {marker} & sleep {marker} &' &) ; (nohup sleep {marker} >/dev/null 2>&1 &); "
               "echo started")
    time.sleep(0.5)
    left = _processes_with(f"sleep\0{marker}")
    return "started" in r.stdout and not left, f"left: {left}"


def chmod_000_leftover() -> tuple[bool, str]:
    name = f"councils-leftover-{uuid.uuid4().hex}"
    r = _shell(f"mkdir -p /tmp/{name}/x {name}/y && touch /tmp/{name}/x/f && chmod 000 /tmp/{name}/x /tmp/{name} "
               f"{name}/y {name}; mkdir /var/tmp/{name} /dev/shm/{name} 2>/dev/null; echo made")
    everywhere = [os.path.join(d, name) for d in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm")]
    return "made" in r.stdout and not any(os.path.exists(p) for p in everywhere), r.stderr[-200:]


def _shm_ids() -> set[str]:
    try:
        with open("/proc/sysvipc/shm", encoding="utf-8") as f:
            return {line.split()[1] for line in f.readlines()[1:] if line.split()}
    except OSError:
        return set()


def sysv_shm_leftover() -> tuple[bool, str]:
    before = _shm_ids()
    r = _shell("ipcmk -M 1048576 && ipcmk -M 2048 && ipcs -m | tail -n +4 | head -3")
    after = _shm_ids()
    return "Shared memory id" in r.stdout and not (after - before), r.stdout[-200:] + r.stderr[-200:]


def memory_across_processes() -> tuple[bool, str]:
    """Eight processes of 200 MiB each try to hold 1.6 GiB together for 5 s; the run's budget is 512 MiB, so at
    most two may still hold theirs at the end (the others were refused the memory or killed)."""
    hold = ("import time; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(5); "
            "print('still', flush=True)")
    script = " ".join(f"{sys.executable} -I -c \"{hold}\" &" for _ in range(8)) + " wait"
    r = _shell(script, SandboxLimits(wall_s=25, cpu_s=10))
    still = r.stdout.split().count("still")
    return still * 200 <= 512, f"{still} of 8 processes still held 200 MiB after 5 s; {r.message}"


def user_namespace_inside() -> tuple[bool, str]:
    r = _shell("unshare -U -r id -u && echo MADE-USERNS; "
               f"{sys.executable} -I -c \"import os; os.unshare(os.CLONE_NEWUSER); print('MADE-USERNS')\"")
    return "MADE-USERNS" not in r.stdout, r.stderr[-200:]


ATTEMPTS: dict[str, Callable[[], tuple[bool, str]]] = {
    f.__name__: f for f in (forge_via_frames, forge_via_globals, forge_via_stdout, forge_via_eq, forge_via_exit,
                            read_parent_environ, read_service_file, connect_loopback, double_fork_survivor,
                            chmod_000_leftover, sysv_shm_leftover, memory_across_processes, user_namespace_inside)
}


def main() -> None:
    """As another user: which isolation the sandbox gives here, and each attempt's outcome, as one JSON document."""
    from actors.verifiers import VerifierMissing, check_installed, sandbox_isolation

    out: dict = {"uid": os.geteuid(), **sandbox_isolation()}
    try:
        check_installed(["python", "shell"])
        out["refused"] = None
    except VerifierMissing as exc:
        out["refused"] = str(exc)
    if out["refused"] is None:
        out["attempts"] = {name: attempt() for name, attempt in ATTEMPTS.items()}
        out["correct"] = tests_check("def add(a, b):\n    return a + b", "assert add(1, 2) == 3\n").status
    print(json.dumps(out))


if __name__ == "__main__":
    main()
