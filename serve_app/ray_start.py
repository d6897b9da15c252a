"""`ray start` with the Valkey password of Ray's GCS kept off every command line.

Ray 2.60 passes the GCS's Redis/Valkey password as an argument: to `ray start --redis-password`, to the
`gcs_server` (`--redis_password=`) and, inside the raylet's worker command, to every worker. Arguments are
world-readable in `/proc/<pid>/cmdline`. This runs Ray's own `ray start` CLI in-process with the password
taken from the environment (`COUNCILS_GCS_REDIS_PASSWORD`, which it removes from the environment its
children inherit) and, for each process Ray starts:
- the `gcs_server` gets `--fromenv=redis_password` and the password in its environment (`FLAGS_redis_password`:
  gflags, which the GCS parses its flags with, reads it from there); a process's environment is readable by
  its own user only;
- every other process (raylet, workers, dashboard, agents) gets no password at all: only the GCS talks to Valkey.

Used by councils_local.ray_nodes.RayHead (`make run`, the test clusters) and by cluster.yaml's head; see
docs/security.md.
"""

from __future__ import annotations

import os
import sys

from .settings import EnvSettings, env_var

ENV_PASSWORD = env_var("gcs_redis_password")


def hide_password(password: str) -> None:
    """Patch ray._private.services.start_ray_process so no command it runs carries `password`."""
    from ray._private import ray_constants, services

    original = services.start_ray_process

    def start_ray_process(command, process_type, *args, env_updates=None, **kwargs):
        cleaned = []
        env_updates = dict(env_updates or {})
        for arg in command:
            if password not in arg:
                cleaned.append(arg)
            elif process_type == ray_constants.PROCESS_TYPE_GCS_SERVER and arg == f"--redis_password={password}":
                cleaned.append("--fromenv=redis_password")
                env_updates["FLAGS_redis_password"] = password
            else:  # e.g. the raylet's worker command: workers never talk to Valkey
                cleaned.append(arg.replace(password, ""))
        return original(cleaned, process_type, *args, env_updates=env_updates or None, **kwargs)

    services.start_ray_process = start_ray_process


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    password = EnvSettings().gcs_redis_password
    os.environ.pop(ENV_PASSWORD, None)  # not inherited by what this process starts
    if password:
        hide_password(password)
        # In this process only: /proc/<pid>/cmdline keeps the arguments this process was started with.
        args.append(f"--redis-password={password}")
    from ray.scripts.scripts import cli

    cli.main(args=args, prog_name="ray")


if __name__ == "__main__":
    main()
