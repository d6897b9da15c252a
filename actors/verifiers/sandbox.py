"""Run an untrusted command contained: the only place proposal code (or a tool fed with it) runs.

`run_sandboxed` starts `argv` in a fresh temporary directory holding `files`, with an environment built
from scratch (nothing inherited: no tokens, no passwords), rlimits, a wall-clock timeout that kills the
whole process group, output capped, no network, no privileges and no lasting writes where the OS allows
(see isolation.py). It never raises for what the command does: every outcome is a `SandboxResult`.

What it cannot contain here: the command can read whatever an unprivileged user may read on this host
(the project tree and its venv included: keep secrets out of world-readable files), and it shares the CPU
(RLIMIT_CPU bounds its time, not its share). Without namespaces (`isolated_network=False`) it can also use
the network and write into world-writable directories such as /tmp.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Literal

from . import isolation

SandboxStatus = Literal["ok", "timeout", "killed", "error"]


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: int = 2  # CPU seconds: SIGXCPU, then SIGKILL one second later
    wall_s: float = 5.0  # wall clock: the process group is killed
    memory_mb: int = 512  # address space
    nproc: int = 32  # processes and threads of the sandbox's uid
    fsize_mb: int = 16  # largest file it may write
    nofile: int = 64  # open file descriptors
    output_bytes: int = 64 * 1024  # stdout and stderr each; past it the command is killed


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class SandboxResult:
    status: SandboxStatus
    returncode: int | None
    stdout: str
    stderr: str
    message: str
    duration_s: float
    isolated_network: bool


def run_sandboxed(argv: list[str], files: dict[str, str], *, limits: SandboxLimits = DEFAULT_LIMITS,
                  stdin: str | None = None) -> SandboxResult:
    """Run `argv` (argv[0] an absolute path or a name on the sandbox's PATH) in a temporary directory
    holding `files` (relative name -> text); the directory is removed afterwards, whatever happened."""
    start = time.monotonic()
    namespaces = isolation.namespaces_available()
    base = tempfile.mkdtemp(prefix="councils-sbx-")
    workdir = os.path.join(base, "work")
    try:
        with isolation.sandbox_uid() as uid:
            _write_files(workdir, files, None if namespaces else uid)
            command = isolation.launcher(
                argv, base, uid, cpu_s=limits.cpu_s, memory_mb=limits.memory_mb, nproc=limits.nproc,
                fsize_mb=limits.fsize_mb, nofile=limits.nofile, namespaces=namespaces)
            try:
                return _run(command, base if namespaces else workdir, workdir, limits, stdin, namespaces, uid, start)
            finally:
                if uid is not None:
                    isolation.reap(uid)
    except (OSError, RuntimeError, ValueError) as exc:
        return SandboxResult("error", None, "", "", f"sandbox could not run the command: {exc}",
                             time.monotonic() - start, namespaces)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _write_files(workdir: str, files: dict[str, str], owner: int | None) -> None:
    os.mkdir(workdir, 0o700)
    for name, text in files.items():
        if os.path.isabs(name) or ".." in name.split("/") or not name:
            raise ValueError(f"sandbox file name must be relative: {name!r}")
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o644)
    if owner is not None:  # no mount namespace: the command writes into this directory itself
        os.chown(workdir, owner, owner)


def _env(workdir: str) -> dict[str, str]:
    """The whole environment of the command: built from nothing, so no secret of ours leaks into it."""
    path = os.pathsep.join([os.path.dirname(os.path.abspath(sys.executable)), "/usr/local/bin", "/usr/bin", "/bin"])
    return {"PATH": path, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}


def _run(command: list[str], cwd: str, workdir: str, limits: SandboxLimits, stdin: str | None, namespaces: bool,
         uid: int | None, start: float) -> SandboxResult:
    proc = subprocess.Popen(command, cwd=cwd, env=_env(workdir), start_new_session=True,
                            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if stdin is not None:
        threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
    out, err, status, message = bytearray(), bytearray(), None, ""
    deadline = time.monotonic() + limits.wall_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map() and status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status, message = "timeout", f"timed out after {limits.wall_s:g} s (wall clock)"
                break
            ready = sel.select(min(remaining, 0.1))
            if not ready and proc.poll() is not None:  # done: what still holds its output open was left behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                if uid is not None:
                    isolation.reap(uid)
            for key, _ in ready:
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                key.data.extend(chunk)
                if len(key.data) > limits.output_bytes:
                    status, message = "killed", f"killed: output over {limits.output_bytes // 1024} KiB"
    try:
        if status is None:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        status, message = "timeout", f"timed out after {limits.wall_s:g} s (wall clock)"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    rc = proc.returncode
    if status is None:
        status, message = _describe(rc, bytes(err), limits, namespaces)
    return SandboxResult(status, None if status == "timeout" else rc, _text(out, limits), _text(err, limits),
                         message, time.monotonic() - start, namespaces)


def _feed(pipe, text: str) -> None:
    try:
        pipe.write(text.encode("utf-8"))
        pipe.close()
    except OSError:  # the command exited (or was killed) without reading it all
        pass


def _describe(rc: int, stderr: bytes, limits: SandboxLimits, namespaces: bool) -> tuple[SandboxStatus, str]:
    # In namespaces the command runs under a shell, which reports death by signal N as 128 + N.
    sig = -rc if rc < 0 else rc - 128 if namespaces and 128 < rc < 160 else None
    if sig is None:
        memory = b"MemoryError" in stderr[-2000:] or b"Cannot allocate memory" in stderr[-2000:]
        return "ok", f"exited with code {rc}" + (f" (out of memory: limit {limits.memory_mb} MiB)" if memory else "")
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    why = {
        signal.SIGXCPU: f": CPU time limit {limits.cpu_s} s",
        signal.SIGKILL: f" (CPU time limit {limits.cpu_s} s, or killed)",
        signal.SIGXFSZ: f": file size limit {limits.fsize_mb} MiB",
        signal.SIGSEGV: f" (memory limit {limits.memory_mb} MiB, or a crash)",
        signal.SIGABRT: f" (memory limit {limits.memory_mb} MiB, or a crash)",
        signal.SIGBUS: f" (memory limit {limits.memory_mb} MiB, or a crash)",
    }.get(sig, "")
    return "killed", f"killed by {name}{why}"


def _text(data: bytearray, limits: SandboxLimits) -> str:
    if len(data) <= limits.output_bytes:
        return data.decode("utf-8", errors="replace")
    return data[: limits.output_bytes].decode("utf-8", errors="replace") + \
        f"\n[... output truncated at {limits.output_bytes // 1024} KiB]"
