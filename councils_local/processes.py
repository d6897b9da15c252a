"""The launcher's processes: finding them (PID, group, session, owner marker), stopping them, waiting on them."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil


def log(msg: str) -> None:
    """A line of the launcher's log (tests and benchmarks read it: "READY on", "Ray head died")."""
    print(f"[councils] {msg}", flush=True)


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


def http_get(url: str, timeout: float = 3, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET `url`: its status and body (an error status too), or 0 and why when nothing answered."""
    try:
        r = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=True)
    except Exception as e:  # not reachable, not a URL: the callers ask again
        return 0, str(e)
    return r.status_code, r.text


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
