"""The OS side of the sandbox: namespaces, an unprivileged uid per run, and the launcher argv.

A sandboxed command is started as

    unshare -n -m -p -f --kill-child --mount-proc  sh -c SETUP  prlimit ... setpriv ... ARGV

when the kernel lets us make namespaces (detected once, `namespaces_available`), else as

    prlimit ... setpriv ... ARGV

- network namespace: only a loopback that is down, so no connection leaves (nor reaches 127.0.0.1);
- pid namespace: when its first process (the SETUP shell) ends or is killed, the kernel kills every
  process left in it, so nothing outlives a run, whatever it forks or however it detaches;
- mount namespace: fresh size-limited tmpfs over /tmp, /var/tmp and /dev/shm (writable, thrown away)
  and over /root, /home and /run (empty, read-only; the interpreter's prefix is bound back when it lies
  there), and the run's work directory is a tmpfs copy of the files: writes go nowhere that lasts;
- prlimit: CPU time, address space, processes, file size, open files, no core files;
- setpriv: when we are root, the command runs as an unprivileged uid of its own (one per concurrent
  run, `sandbox_uid`), so RLIMIT_NPROC applies (root ignores it) and it can write nowhere root owns.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

# Unprivileged uids for sandboxed runs: unused by Debian (60000-64999 are allocated on demand only).
# One uid per concurrent run, so one run's fork bomb cannot use up another run's process budget.
UID_BASE = 61000
UID_SLOTS = 256
# In the mount namespace, fresh tmpfs over the shared scratch directories (writable, thrown away) and over
# the home and run-time directories (read-only for the sandbox user), where those exist.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
MASKED_DIRS = ("/root", "/home", "/run")
TMPFS_MB = 16

_SETUP = """set -e
W="$1"; T="$2"; U="$3"; K="$4"; shift 4
IFS=:
i=0; for k in $K; do mkdir -p "keep/$i"; mount --bind "$k" "keep/$i"; i=$((i+1)); done
for d in %s; do if [ -d "$d" ]; then mount -t tmpfs -o "size=${T}m,mode=1777" tmpfs "$d"; fi; done
for d in %s; do if [ -d "$d" ]; then mount -t tmpfs -o "size=1m,mode=0755" tmpfs "$d"; fi; done
i=0; for k in $K; do mkdir -p "$k"; mount -c --bind "keep/$i" "$k"; i=$((i+1)); done
unset IFS
mkdir -p "$W"
mount -t tmpfs -o "size=${T}m,mode=0700,uid=$U,gid=$U" tmpfs "$W"
cp -R work/. "$W"/
chmod -R a+rX "$W"
cd "$W"
set +e
"$@"
exit $?
""" % (" ".join(SCRATCH_DIRS), " ".join(MASKED_DIRS))
# The run's directory (`base`, created on the host before the namespace exists) holds work/ (the files)
# and keep/. In the namespace the SETUP shell stands in it (its cwd, still reachable once /tmp is
# masked): it binds the interpreter's prefixes that lie under a masked directory (pyenv under /root)
# to keep/ and back into place after masking, copies work/ to a tmpfs mounted at work/'s path, and
# runs the command there as a child, never as the namespace's first process: that one ignores signals
# it has no handler for, which would disarm the CPU limit's SIGXCPU.


def kept_paths() -> list[str]:
    """The interpreter's prefixes (base and venv) that masking would hide: bound back in the namespace."""
    masked = SCRATCH_DIRS + MASKED_DIRS
    prefixes = dict.fromkeys(os.path.realpath(p) for p in (sys.base_prefix, sys.prefix))
    return [p for p in prefixes if any(p == d or p.startswith(d + "/") for d in masked)]


def tool(name: str) -> str | None:
    """Absolute path of a binary: the interpreter's bin directory (the venv's) first, then PATH."""
    here = os.path.dirname(os.path.abspath(sys.executable))
    return shutil.which(name, path=os.pathsep.join([here, os.environ.get("PATH", os.defpath)]))


def launcher_tools() -> list[str]:
    """Binaries the launcher needs on this machine (unshare, mount and cp only when namespaces work)."""
    names = ["sh", "prlimit"] + (["setpriv"] if os.geteuid() == 0 else [])
    return names + (["unshare", "mount", "cp", "chmod", "mkdir"] if namespaces_available() else [])


@functools.cache
def namespaces_available() -> bool:
    """Whether `unshare` may make network, mount and pid namespaces here (root in most containers)."""
    unshare = tool("unshare")
    if unshare is None or os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory(prefix="councils-sbx-probe-") as base:
        os.mkdir(os.path.join(base, "work"))
        argv = launcher(["true"], base, 65534, cpu_s=5, memory_mb=256, nproc=8, fsize_mb=1, nofile=32,
                        namespaces=True)
        try:
            return subprocess.run(argv, cwd=base, env={"PATH": os.defpath}, capture_output=True,
                                  timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False


@contextlib.contextmanager
def sandbox_uid() -> Iterator[int | None]:
    """A uid no other sandboxed run uses right now (a lock file per slot), or None when not root."""
    if os.geteuid() != 0:
        yield None
        return
    locks = os.path.join(tempfile.gettempdir(), "councils-sandbox-uids")
    os.makedirs(locks, mode=0o700, exist_ok=True)
    st = os.lstat(locks)
    if st.st_uid != 0 or st.st_mode & 0o077 or not os.path.isdir(locks) or os.path.islink(locks):
        raise RuntimeError(f"{locks} must be a directory owned by root with mode 0700")
    start = random.randrange(UID_SLOTS)
    for attempt in range(UID_SLOTS + 1):
        slot = (start + attempt) % UID_SLOTS
        fd = os.open(os.path.join(locks, str(slot)), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        try:
            # Every slot busy: wait for the first one rather than share a uid.
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if attempt == UID_SLOTS else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield UID_BASE + slot
        finally:
            os.close(fd)
        return


def launcher(argv: list[str], base: str, uid: int | None, *, cpu_s: int, memory_mb: int, nproc: int,
             fsize_mb: int, nofile: int, namespaces: bool) -> list[str]:
    """The full argv that runs `argv` contained (see the module docstring), from the cwd `base` (with
    namespaces) or `base`/work (without), where the files are."""
    limits = [tool("prlimit") or "prlimit", f"--cpu={cpu_s}:{cpu_s + 1}", f"--as={memory_mb << 20}",
              f"--nproc={nproc if uid is not None else _own_processes() + nproc}",
              f"--fsize={fsize_mb << 20}", f"--nofile={nofile}", "--core=0", "--"]
    drop = [] if uid is None else [tool("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}",
                                   "--clear-groups", "--no-new-privs", "--"]
    command = limits + drop + argv
    if not namespaces:
        return command
    return [tool("unshare") or "unshare", "-n", "-m", "-p", "-f", "--kill-child", "--mount-proc",
            "sh", "-c", _SETUP, "sh", os.path.join(base, "work"), str(TMPFS_MB),
            str(os.getuid() if uid is None else uid), ":".join(kept_paths()), *command]


def _own_processes() -> int:
    """Processes (threads) of our uid now: without a uid of its own, a run's NPROC budget comes on top."""
    uid, count = os.getuid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
    return count


def reap(uid: int) -> None:
    """SIGKILL every process of `uid` until none is left (a pid namespace's last processes, or ones that
    left the process group without one), so the uid is free for the next run when its slot is released."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}").st_uid == uid and not _zombie(pid):
                    os.kill(int(pid), 9)
                    alive.append(pid)
        if not alive:
            return
        time.sleep(0.01)


def _zombie(pid: str) -> bool:
    """Dead, waiting for its parent to collect it: it holds nothing any more."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()[0] == b"Z"
