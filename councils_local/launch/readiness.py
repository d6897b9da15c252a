"""The wait for the deployed service: /readyz answering 200, progress every 15 s, and a failed deploy (the dashboard's
Serve REST API) or a dead head said at once instead of waiting out the timeout."""

from __future__ import annotations

import json
import time

from ..processes import http_get, log, wait_for
from ..ray_nodes import RayHead
from .start import ServeConfig


def serve_failures(dashboard_url: str, headers: dict[str, str] | None = None) -> str | None:
    """The message of any Serve application whose deployment failed, from the dashboard's REST API."""
    status, body = http_get(f"{dashboard_url}/api/serve/applications/", headers=headers)
    if status != 200:
        return None
    try:
        apps = json.loads(body).get("applications", {})
    except ValueError:
        return None
    failed = []
    for name, app in apps.items():
        if app.get("status") != "DEPLOY_FAILED":
            continue
        failed.append(f"{name}: {app.get('message', '')}")
        # A replica that fails to start (e.g. a bad user_config) is explained on its deployment.
        failed += [f"{name}/{dep}: {d.get('message', '')}" for dep, d in (app.get("deployments") or {}).items()
                   if d.get("status") in ("DEPLOY_FAILED", "UNHEALTHY") and d.get("message")]
    return "\n".join(failed) or None


def wait_ready(head: RayHead, config: ServeConfig, timeout_s: float) -> None:
    """Wait for the deployed `config`'s /readyz to answer 200, then say so and how to try it."""
    started = time.time()

    def progress():
        if not head.alive():
            raise RuntimeError(f"Ray head exited; see {head.log_path}")
        failed = serve_failures(head.dashboard_url, head.auth_headers())
        if failed:  # a bad config never becomes ready: say why instead of waiting
            raise RuntimeError(f"serve deploy failed:\n{failed}")
        if int(time.time() - started) % 15 == 0:
            log(f"... {int(time.time() - started)}s: {http_get(config.ready_url)[1][:200]}")

    wait_for(lambda: http_get(config.ready_url)[0] == 200, timeout_s, "service", on_wait=progress)
    log(f"READY on http://127.0.0.1:{config.http_port}  (took {time.time() - started:.0f}s)")
    log(f"try: curl -s -X POST 'http://127.0.0.1:{config.http_port}/v1/deliberations?wait=true' "
        "-H 'content-type: application/json' -d '{\"role\":\"DEV\",\"task\":\"Write a Python function "
        "that checks whether a string is a palindrome.\"}'")
    log("Ctrl-C stops everything this started")
