"""`make run`: the whole service on one machine, with nothing to set up by hand.

Starts, each in its own process group so that stopping touches only what it started:
  1. the embedded Valkey (AOF on, data under .data/valkey) unless COUNCILS_VALKEY_URL points elsewhere,
  2. a Ray head whose GCS keeps its tables in that Valkey (RAY_REDIS_ADDRESS + a stable
     RAY_external_storage_namespace), so detached councils and the Serve app survive a head restart,
     and a worker node for the councils and engines (docs/topology.md),
  3. the Serve application through the real `serve deploy CONFIG`,
then waits for /readyz, prints a ready line, and supervises: a dead Valkey or Ray node is restarted
on the same port and namespace. Ctrl-C stops everything it started, by process group.
"""

from __future__ import annotations

import subprocess
import sys

import yaml

from serve_app.settings import EnvSettings

from .launch.environment import prepare, usable_metrics_port
from .launch.options import parse
from .launch.readiness import wait_ready
from .launch.start import start
from .launch.supervision import Started, StopSignals, supervise
from .processes import log


def main(argv: list[str] | None = None) -> int:
    """Run `make run` with the options of `argv` (default: sys.argv[1:]); the exit status: 0 after Ctrl-C or
    SIGTERM, 1 when the start failed (the error logged). Bad usage exits with 2, --help with 0."""
    env = EnvSettings()  # COUNCILS_* (serve_app/settings.py): the options' defaults, the external Valkey
    opts = parse(argv, env, description=__doc__)
    token_path = prepare(opts.data_dir, opts.ray_auth)
    opts.metrics_port = usable_metrics_port(opts.metrics_port)
    signals = StopSignals().install()
    # Everything below runs inside the try: whatever has been started when anything fails (a bad config,
    # a Valkey that does not come up, a signal) is stopped in the finally.
    started = Started()
    try:
        config = start(opts, env, token_path, started)
        wait_ready(started.head, config, opts.ready_timeout)
        supervise(started)
    except KeyboardInterrupt:
        log("stopping")
        return 0
    except (RuntimeError, OSError, ValueError, yaml.YAMLError, subprocess.CalledProcessError) as exc:
        log(f"ERROR: {type(exc).__name__}: {exc}")
        return 1
    finally:
        signals.stopping = True  # from here on a signal is only logged: the cleanup runs to its end
        started.stop()
        log("stopped")


if __name__ == "__main__":
    sys.exit(main())
