"""`make run`: the whole service on one machine, with nothing to set up by hand.

Starts, each in its own process group so that stopping touches only what it started:
  1. the embedded Valkey (AOF on, data under .data/valkey) unless COUNCILS_VALKEY_URL points elsewhere,
  2. a Ray head whose GCS keeps its tables in that Valkey (RAY_REDIS_ADDRESS + a stable
     RAY_external_storage_namespace), so detached councils and the Serve app survive a head restart,
  3. the Serve application through the real `serve deploy CONFIG`,
then waits for /readyz, prints a ready line, and supervises: a dead Valkey or Ray head is restarted
on the same port and namespace. Ctrl-C stops everything it started, by process group.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from actors import topology
from serve_app.redact import redact_url
from serve_app.settings import EnvSettings

from .processes import http_get, log, port_is_free, wait_for
from .ray_nodes import BIN, RayHead, RayWorker, alive_nodes, idempotency_secret, ray_auth_token, ray_redis_args
from .supervisor import Supervisor, exit_reason
from .valkey_server import ValkeyProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


def stop_started(head: RayHead | None, valkey: ValkeyProcess | None, workers: list[RayWorker] | tuple = ()) -> None:
    """Stop what the launcher started: the Ray worker nodes, the Ray head (and anything of either left holding
    a port), then Valkey, each even if the step before failed."""
    for what, proc in ([(f"the Ray {w.name} node", w) for w in workers]
                       + [("the Ray head", head), ("Valkey", valkey)]):
        if proc is None:
            continue
        try:
            proc.stop()
        except Exception as exc:  # keep going: the next one must stop too
            log(f"stopping {what}: {type(exc).__name__}: {exc}")


def check_started(nodes: list[RayHead]) -> None:
    for node in nodes:
        if not node.alive():
            raise RuntimeError(f"Ray node exited ({exit_reason(node.proc)}); see {node.log_path}")


def serve_deploy(config: Path, dashboard_url: str, env: dict[str, str]) -> None:
    subprocess.run([str(BIN / "serve"), "deploy", str(config), "--address", dashboard_url],
                   check=True, env={**os.environ, **env})


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


def main(argv: list[str] | None = None) -> int:
    env = EnvSettings()  # COUNCILS_* (serve_app/settings.py)
    ap = argparse.ArgumentParser(prog="python -m councils_local.launcher", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "local.yaml"))
    ap.add_argument("--data-dir", default=env.data_dir or str(ROOT / ".data"))
    ap.add_argument("--valkey-port", type=int, default=env.valkey_port)
    ap.add_argument("--ray-port", type=int, default=env.ray_port)
    ap.add_argument("--dashboard-port", type=int, default=env.dashboard_port)
    ap.add_argument("--metrics-port", type=int, default=env.metrics_port,
                    help="Prometheus metrics of the node (ray start --metrics-export-port); 0: a random port")
    ap.add_argument("--http-port", type=int, default=None,
                    help="override http_options.port of the config (default: the config's, 8000)")
    ap.add_argument("--namespace", default=env.gcs_namespace,
                    help="RAY_external_storage_namespace: keep it stable so a restart finds its cluster")
    ap.add_argument("--num-cpus", type=int, default=None,
                    help="CPUs the worker node offers (default: this machine's); the head offers none")
    ap.add_argument("--ready-timeout", type=float, default=900)
    ap.add_argument("--ray-auth", choices=("token", "disabled"), default=env.ray_auth,
                    help="Ray token authentication of the local cluster (default token: the launcher creates the "
                         "token, 0600, under the data dir; $COUNCILS_RAY_AUTH)")
    args = ap.parse_args(argv)

    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)  # Valkey's password, the Ray token, the AOF: for this user only
    token_path = ray_auth_token(data) if args.ray_auth == "token" else None
    # The Ray CLI calls below (serve deploy) must match the head: same mode, same token file.
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_MODE"] = "token" if token_path else "disabled"
    if token_path:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    from actors.model_prep import ensure_dev_model

    log(f"dev model: {ensure_dev_model()}")

    if args.metrics_port and not port_is_free(args.metrics_port):
        busy, args.metrics_port = args.metrics_port, free_port()
        log(f"metrics port {busy} is taken; using {args.metrics_port} (set --metrics-port / COUNCILS_METRICS_PORT)")

    stopping = False

    def _stop(signum, _frame):
        nonlocal stopping
        if stopping:  # a second Ctrl-C (or SIGTERM) during the shutdown must not cut it short
            log(f"{signal.Signals(signum).name}: already stopping; waiting for what this started to exit")
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    # Also SIGINT explicitly: a shell starts background jobs with SIGINT ignored, and Python then keeps
    # ignoring it, so `kill -INT` of a backgrounded `make run` would otherwise do nothing.
    signal.signal(signal.SIGINT, _stop)
    # Everything below runs inside the try: whatever has been started when anything fails (a bad config,
    # a Valkey that does not come up, a signal) is stopped in the finally.
    valkey: ValkeyProcess | None = None
    head: RayHead | None = None
    workers: list[RayWorker] = []
    try:
        config_path = Path(args.config)
        config = yaml.safe_load(config_path.read_text())
        if args.http_port is not None:  # deploy a copy of the config with the port changed, nothing else
            config.setdefault("http_options", {})["port"] = args.http_port
            config_path = data / "serve-config.yaml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        args.http_port = config.get("http_options", {}).get("port", 8000)
        ready_url = f"http://127.0.0.1:{args.http_port}/readyz"
        external = env.valkey_url
        if external:
            url = external
            redis_address, username, password = ray_redis_args(url)
            log(f"external Valkey at {redact_url(url)}")
        else:
            # Two ACL users: `councils` (keys under the config's prefix, no dangerous command) and `gcs` (Ray's GCS).
            prefix = next((app.get("args", {}).get("key_prefix") for app in config.get("applications", [])
                           if app.get("args", {}).get("key_prefix")), "councils:")
            valkey = ValkeyProcess(data / "valkey", port=args.valkey_port, acl_users=prefix).start()
            url, redis_address = valkey.url, valkey.address
            username, password = valkey.gcs_username, valkey.gcs_password
            log(f"embedded Valkey on {valkey.address} (AOF in {valkey.data_dir}; ACL users councils and gcs, "
                f"passwords in {valkey.data_dir}, mode 0600)")

        child_env = {
            "COUNCILS_VALKEY_URL": url,
            # The Idempotency-Key HMAC's key (serve_app/records.py), 0600 under the data dir: its path only.
            "COUNCILS_IDEMPOTENCY_SECRET_FILE": str(idempotency_secret(data)),
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "HF_HUB_OFFLINE": "1",
            "RAY_SERVE_ENABLE_TASK_EVENTS": os.environ.get("RAY_SERVE_ENABLE_TASK_EVENTS", "0"),
            # The Serve controller's loop every 1 s instead of 0.1 s: idle, it used 7 % of a core here, 2.6 % at 1 s
            # (docs/benchmarks.md, idle CPU); a dead replica or a new config is acted on up to 0.9 s later.
            "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": os.environ.get("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "1"),
        }
        head = RayHead(port=args.ray_port, dashboard_port=args.dashboard_port,
                       temp_dir=env.ray_temp_dir or f"/tmp/councils-ray-{args.ray_port}",
                       redis_address=redis_address, namespace=args.namespace, env=child_env,
                       redis_password=password, redis_username=username, num_cpus=0, log_path=data / "ray-head.log",
                       metrics_export_port=args.metrics_port or None, auth_token_path=token_path,
                       dashboard_agent_port=free_port())
        # The production topology (docs/topology.md): a head that runs no councils and no engines (num-cpus 0,
        # no councils_* resources) and a worker node that offers every resource they require.
        workers = [RayWorker(head=head, env=child_env, log_path=data / "ray-worker.log", num_cpus=args.num_cpus,
                             resources=topology.node_resources(), metrics_export_port=free_port(),
                             dashboard_agent_port=free_port())]
        head.start()
        log(f"Ray head on {head.gcs_address} (GCS tables in Valkey, namespace {args.namespace!r}; num-cpus 0: "
            f"GCS, dashboard, Serve controller); dashboard {head.dashboard_url}"
            + (f"; metrics {head.metrics_url}" if head.metrics_url else ""))
        if token_path:
            log(f"Ray token authentication on: the token is in {token_path} (0600); for ray/serve CLI calls "
                f"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token_path}")
        wait_for(head.answers, 180, "Ray dashboard")
        for worker in workers:
            worker.start()
        wait_for(lambda: alive_nodes(head) >= 1 + len(workers), 180, "Ray worker node",
                 on_wait=lambda: check_started(workers))
        for worker in workers:
            log(f"Ray {worker.name} node joined ({', '.join(sorted(worker.resources or {}))}"
                + (f"; metrics {worker.metrics_url}" if worker.metrics_url else "") + f"; log {worker.log_path})")
        serve_deploy(config_path, head.dashboard_url, child_env)
        log(f"deployed {config_path}; waiting for {ready_url}")
        started = time.time()

        def progress():
            if not head.alive():
                raise RuntimeError(f"Ray head exited; see {head.log_path}")
            failed = serve_failures(head.dashboard_url, head.auth_headers())
            if failed:  # a bad config never becomes ready: say why instead of waiting
                raise RuntimeError(f"serve deploy failed:\n{failed}")
            if int(time.time() - started) % 15 == 0:
                log(f"... {int(time.time() - started)}s: {http_get(ready_url)[1][:200]}")

        wait_for(lambda: http_get(ready_url)[0] == 200, args.ready_timeout, "service", on_wait=progress)
        log(f"READY on http://127.0.0.1:{args.http_port}  (took {time.time() - started:.0f}s)")
        log(f"try: curl -s -X POST 'http://127.0.0.1:{args.http_port}/v1/deliberations?wait=true' "
            "-H 'content-type: application/json' -d '{\"role\":\"DEV\",\"task\":\"Write a Python function "
            "that checks whether a string is a palindrome.\"}'")
        log("Ctrl-C stops everything this started")
        supervisor = Supervisor(head, valkey, workers=workers)
        while True:
            time.sleep(1)
            supervisor.check()
    except KeyboardInterrupt:
        log("stopping")
        return 0
    except (RuntimeError, OSError, ValueError, yaml.YAMLError, subprocess.CalledProcessError) as exc:
        log(f"ERROR: {type(exc).__name__}: {exc}")
        return 1
    finally:
        stopping = True  # from here on a signal is only logged: the cleanup runs to its end
        stop_started(head, valkey, workers)
        log("stopped")


if __name__ == "__main__":
    sys.exit(main())
