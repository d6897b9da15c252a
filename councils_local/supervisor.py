"""Restarting what died in the local cluster (Valkey, the Ray head, the worker nodes), with backoff."""

from __future__ import annotations

import signal
import subprocess
import time

from .processes import log
from .ray_nodes import RayHead, RayWorker
from .valkey_server import ValkeyProcess


class Backoff:
    """Delays between restarts of one process: none for the first after it ran a while, then doubling
    (base_s, 2 base_s, ...) up to cap_s, so a process that cannot stay up is not restarted every second."""

    def __init__(self, base_s: float = 1.0, cap_s: float = 60.0, stable_s: float = 60.0):
        self.base_s, self.cap_s, self.stable_s = base_s, cap_s, stable_s
        self.failures = 0  # restarts since it last stayed up for stable_s
        self.started_at: float | None = None

    def next_delay(self, now: float) -> float:
        if self.started_at is not None and now - self.started_at >= self.stable_s:
            self.failures = 0
        delay = 0.0 if self.failures == 0 else min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
        self.failures += 1
        return delay

    def started(self, now: float) -> None:
        self.started_at = now


def exit_reason(proc: subprocess.Popen | None) -> str:
    code = proc.poll() if proc is not None else None
    if code is None:
        return "not running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Heals the local cluster without a person: a dead Valkey restarts from its AOF, and a dead Ray head
    (GCS or raylet: `ray start --block` exits when either dies, and Ray's GCS exits on a Valkey outage)
    restarts on the same port and GCS namespace, where GCS fault tolerance brings the actors back.
    A dead worker node (`workers`) restarts and rejoins the head; a worker is left alone while only the head
    is down (its raylet waits for the GCS: SURVIVE_GCS_ENV), so its actors and their models stay.
    Restarts back off (Backoff) and every one is logged with why."""

    def __init__(self, head: RayHead, valkey: ValkeyProcess | None, say=log, clock=time.monotonic,
                 backoff=Backoff, workers: list[RayWorker] | tuple = ()):
        self.head = head
        self.valkey = valkey
        self.workers = list(workers)
        self.say = say
        self.clock = clock
        self.restarts = {"valkey": 0, "head": 0, **{w.name: 0 for w in self.workers}}
        self.backoff = {"valkey": backoff(), "head": backoff(), **{w.name: backoff() for w in self.workers}}
        self.due: dict[str, float] = {}  # component -> when its scheduled restart runs

    def check(self) -> None:
        if self.valkey is not None and not self.valkey.alive():
            self._restart("valkey", "Valkey", self.valkey.proc, self.valkey.start, "from its AOF")
        if self.head.proc is not None and not self.head.alive():
            self._restart("head", "Ray head", self.head.proc, self.head.restart_if_dead,
                          "on the same port and GCS namespace")
        for worker in self.workers:
            if worker.proc is not None and not worker.alive():
                self._restart(worker.name, f"Ray {worker.name} node", worker.proc, worker.restart_if_dead,
                              f"and rejoining the head at {self.head.gcs_address}")

    def _restart(self, name: str, what: str, proc, start, how: str) -> None:
        now = self.clock()
        if name not in self.due:
            delay = self.backoff[name].next_delay(now)
            self.due[name] = now + delay
            self.say(f"{what} died ({exit_reason(proc)}); restarting it {how} "
                     + (f"in {delay:.0f}s (attempt {self.backoff[name].failures} in a row)" if delay else "now"))
        if now < self.due[name]:
            return
        del self.due[name]
        try:
            start()
        except Exception as exc:  # the next check schedules another try, later
            self.say(f"{what} did not start: {type(exc).__name__}: {exc}")
            return
        self.backoff[name].started(self.clock())
        self.restarts[name] += 1
        self.say(f"{what} restarted {how}")
