"""Once the service is up, and on the way out: SIGINT and SIGTERM as Ctrl-C, the supervisor's loop (a dead Valkey,
head or worker node restarted, supervisor.py), and stopping everything this launcher started."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field

from ..processes import log
from ..ray_nodes import RayHead, RayWorker
from ..supervisor import Supervisor
from ..valkey_server import ValkeyProcess


class StopSignals:
    """SIGINT and SIGTERM end the run as Ctrl-C does (KeyboardInterrupt), once: from `stopping` on, a signal is
    only logged, so that a second Ctrl-C (or SIGTERM) during the shutdown does not cut it short."""

    def __init__(self):
        self.stopping = False

    def install(self) -> StopSignals:
        signal.signal(signal.SIGTERM, self._stop)
        # Also SIGINT explicitly: a shell starts background jobs with SIGINT ignored, and Python then keeps
        # ignoring it, so `kill -INT` of a backgrounded `make run` would otherwise do nothing.
        signal.signal(signal.SIGINT, self._stop)
        return self

    def _stop(self, signum, _frame) -> None:
        if self.stopping:
            log(f"{signal.Signals(signum).name}: already stopping; waiting for what this started to exit")
            return
        self.stopping = True
        raise KeyboardInterrupt


@dataclass
class Started:
    """What this launcher started, filled in as it starts (start.py): all of it is stopped in the end, whatever
    failed."""

    valkey: ValkeyProcess | None = None
    head: RayHead | None = None
    workers: list[RayWorker] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the Ray worker nodes, the Ray head (and anything of either left holding a port), then Valkey, each
        even if the step before failed."""
        for what, proc in ([(f"the Ray {w.name} node", w) for w in self.workers]
                           + [("the Ray head", self.head), ("Valkey", self.valkey)]):
            if proc is None:
                continue
            try:
                proc.stop()
            except Exception as exc:  # keep going: the next one must stop too
                log(f"stopping {what}: {type(exc).__name__}: {exc}")

def supervise(started: Started) -> None:
    """Restart whatever of `started` dies, checked every second, until a signal ends the run."""
    supervisor = Supervisor(started.head, started.valkey, workers=started.workers)
    while True:
        time.sleep(1)
        supervisor.check()
