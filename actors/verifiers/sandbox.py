"""Run an untrusted command contained: the only place proposal code (or a tool fed with it) runs.

`run_sandboxed` starts `argv` isolated (isolation.py: bubblewrap namespaces, a uid of the run's own as
root, limits that cannot multiply) in a fresh work directory holding `files`, with an environment built
from scratch (nothing inherited: no tokens, no passwords), a wall-clock timeout that kills the whole run,
and output capped. It never raises for what the command does: every outcome is a `SandboxResult`.

Fails closed: where isolation does not work here (no bubblewrap, no user namespaces), nothing runs and the
result is `refused`, naming what is missing, unless the caller passes `allow_unisolated=True` (the
operator's `verification.allow_unisolated_sandbox`); then rlimits and the clean environment are all there
is, and `SandboxResult.isolation` says so.
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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from . import isolation

SandboxStatus = Literal["ok", "timeout", "killed", "error", "refused"]


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: int = 2  # CPU seconds: SIGXCPU, then SIGKILL one second later
    wall_s: float = 5.0  # wall clock: the whole run is killed
    memory_mb: int = 512  # the run's memory, all its processes together
    nproc: int = 32  # processes and threads of the run
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
    isolation: str  # which isolation ran (isolation.Isolation.summary)
    isolated: bool = True


def run_sandboxed(argv: list[str], files: dict[str, str], *, limits: SandboxLimits = DEFAULT_LIMITS,
                  stdin: str | None = None, allow_unisolated: bool = False) -> SandboxResult:
    """Run `argv` (argv[0] an absolute path or a name on the sandbox's PATH) in a work directory holding
    `files` (relative name -> text); everything the run made is gone afterwards, whatever happened."""
    start = time.monotonic()
    iso = isolation.probe()
    if not iso.isolated and not allow_unisolated:
        return SandboxResult("refused", None, "", "", isolation.unisolated_refusal(iso), 0.0, iso.summary, False)
    base = tempfile.mkdtemp(prefix="councils-sbx-")
    try:
        for name in files:
            if not name or os.path.isabs(name) or ".." in name.split("/"):
                raise ValueError(f"sandbox file name must be relative: {name!r}")
        os.chmod(base, 0o711)  # as root, the run's uid reaches its files (unisolated) or the staged prefixes
        with isolation.sandbox_uid() as uid:
            if not iso.isolated:
                workdir = os.path.join(base, "work")
                _write_files(workdir, files, uid)
                command = isolation.unisolated_launcher(
                    argv, uid, cpu_s=limits.cpu_s, memory_mb=limits.memory_mb, nproc=limits.nproc,
                    fsize_mb=limits.fsize_mb, nofile=limits.nofile)
                try:
                    return _run(command, workdir, _env(workdir), (), limits, stdin, start, iso)
                finally:
                    if uid is not None:
                        isolation.reap(uid)
            with _opened(base, files) as fds, \
                    isolation.run_cgroup(iso.cgroup, memory_mb=limits.memory_mb, nproc=limits.nproc) as procs:
                command = isolation.launcher(
                    argv, base, fds, uid, procs, cpu_s=limits.cpu_s, memory_mb=limits.memory_mb,
                    nproc=limits.nproc, fsize_mb=limits.fsize_mb, nofile=limits.nofile, bwrap=iso.bwrap,
                    env=_env(isolation.WORK_DIR), cgroup=iso.cgroup is not None)
                return _run(command, base, {"PATH": os.defpath}, tuple(fds.values()), limits, stdin, start, iso)
    except (OSError, RuntimeError, ValueError) as exc:
        return SandboxResult("error", None, "", "", f"sandbox could not run the command: {exc}",
                             time.monotonic() - start, iso.summary, iso.isolated)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _opened(base: str, files: dict[str, str]) -> Iterator[dict[str, int]]:
    """Each file written under `base` (0600, ours) and open for reading: bwrap copies them into the run's tmpfs."""
    fds: dict[str, int] = {}
    try:
        for i, (name, text) in enumerate(files.items()):
            path = os.path.join(base, f"file-{i}")
            with open(path, "w", encoding="utf-8", opener=lambda p, f: os.open(p, f, 0o600)) as f:
                f.write(text)
            fds[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def _write_files(workdir: str, files: dict[str, str], owner: int | None) -> None:
    """Unisolated runs only: the files in a directory of the host, which the command writes into itself."""
    os.mkdir(workdir, 0o700)
    for name, text in files.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o644)
    if owner is not None:
        os.chown(workdir, owner, owner)


def _env(workdir: str) -> dict[str, str]:
    """The whole environment of the command: built from nothing, so no secret of ours leaks into it."""
    path = os.pathsep.join([os.path.dirname(os.path.abspath(sys.executable)), "/usr/local/bin", "/usr/bin", "/bin"])
    return {"PATH": path, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
            "RAYON_NUM_THREADS": "1"}  # ruff: one thread, whatever the node's core count (threads count as processes)


def _run(command: list[str], cwd: str, env: dict[str, str], fds: tuple[int, ...], limits: SandboxLimits,
         stdin: str | None, start: float, iso: isolation.Isolation) -> SandboxResult:
    proc = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True, pass_fds=fds,
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
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    rc = proc.returncode
    if status is None:
        status, message = _describe(rc, bytes(err), limits, iso.isolated)
    return SandboxResult(status, None if status == "timeout" else rc, _text(out, limits), _text(err, limits),
                         message, time.monotonic() - start, iso.summary, iso.isolated)


def _feed(pipe, text: str) -> None:
    try:
        pipe.write(text.encode("utf-8"))
        pipe.close()
    except OSError:  # the command exited (or was killed) without reading it all
        pass


def _describe(rc: int, stderr: bytes, limits: SandboxLimits, namespaces: bool) -> tuple[SandboxStatus, str]:
    # Under bubblewrap, death by signal N comes back as exit status 128 + N.
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
