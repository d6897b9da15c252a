"""What the launcher sets up before it starts anything: its private data directory, Ray's token mode for itself and
every Ray CLI call, the dev model, a metrics port that is free; and the environment the Ray nodes (and so every
replica) get."""

from __future__ import annotations

import os
from pathlib import Path

from ..processes import log, port_is_free
from ..ray_nodes import idempotency_secret, ray_auth_token
from ..valkey_server import free_port


def prepare(data: Path, ray_auth: str) -> Path | None:
    """Make the data directory (this user's only), choose Ray's auth mode and fetch the dev model; the Ray token's
    path (None: token authentication off)."""
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)  # Valkey's password, the Ray token, the AOF: for this user only
    token_path = ray_auth_token(data) if ray_auth == "token" else None
    # The Ray CLI calls below (serve deploy) must match the head: same mode, same token file.
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_MODE"] = "token" if token_path else "disabled"
    if token_path:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    from actors.model_prep import ensure_dev_model

    log(f"dev model: {ensure_dev_model()}")
    return token_path


def usable_metrics_port(port: int) -> int:
    """`port`, or a free one if it is taken (0 stays 0: Ray picks one)."""
    if port and not port_is_free(port):
        busy, port = port, free_port()
        log(f"metrics port {busy} is taken; using {port} (set --metrics-port / COUNCILS_METRICS_PORT)")
    return port


def node_env(valkey_url: str, data: Path) -> dict[str, str]:
    """The environment of the Ray nodes, and so of every process Ray starts (the replicas, the councils)."""
    return {
        "COUNCILS_VALKEY_URL": valkey_url,
        # The Idempotency-Key HMAC's key (serve_app/records.py), 0600 under the data dir: its path only.
        "COUNCILS_IDEMPOTENCY_SECRET_FILE": str(idempotency_secret(data)),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "HF_HUB_OFFLINE": "1",
        "RAY_SERVE_ENABLE_TASK_EVENTS": os.environ.get("RAY_SERVE_ENABLE_TASK_EVENTS", "0"),
        # The Serve controller's loop every 1 s instead of 0.1 s: idle, it used 7 % of a core here, 2.6 % at 1 s
        # (docs/benchmarks.md, idle CPU); a dead replica or a new config is acted on up to 0.9 s later.
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": os.environ.get("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "1"),
    }
