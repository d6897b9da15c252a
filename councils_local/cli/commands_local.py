"""`councils up` and `councils down`: the launcher in the background, found again by its PID file, and stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from serve_app.settings import EnvSettings

from .client import DEFAULT_URL, CliError
from .options import Options
from .render import live_status, out

ROOT = Path(__file__).resolve().parents[2]
PID_FILE = "councils.pid"
LOG_FILE = "councils.log"

DataDir = Annotated[str | None, typer.Option(
    "--data-dir", help="default: $COUNCILS_DATA_DIR or .data (PID file and log go here)")]


def data_dir(path: str | None) -> Path:
    return Path(path or EnvSettings().data_dir or ROOT / ".data")


def launcher_command(ddir: Path, config: str | None, http_port: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "councils_local.launcher", "--data-dir", str(ddir)]
    if config:
        cmd += ["--config", config]
    if http_port:
        cmd += ["--http-port", str(http_port)]
    return cmd


def read_pid(path: Path) -> dict | None:
    """The launcher we started, if it is still that process (a reused PID is not ours)."""
    import psutil

    try:
        info = json.loads(path.read_text())
        proc = psutil.Process(int(info["pid"]))
        if abs(proc.create_time() - float(info["create_time"])) > 1.0:
            return None
        return info if proc.status() != psutil.STATUS_ZOMBIE else None
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None


def up(opts: Options,
       config: Annotated[str | None, typer.Option(
           help="Serve config (default: the launcher's, configs/local.yaml)")] = None,
       data_dir_: DataDir = None,
       http_port: Annotated[int | None, typer.Option(help="the service's HTTP port")] = None,
       no_wait: Annotated[bool, typer.Option(
           "--no-wait", help="return at once instead of waiting for /readyz")] = False,
       ready_timeout: Annotated[float, typer.Option(help="seconds to wait for /readyz")] = 900) -> int:
    """Start the local service (the launcher) in the background."""
    import psutil

    url = f"http://127.0.0.1:{http_port}" if http_port and opts.url == DEFAULT_URL else opts.url
    ddir = data_dir(data_dir_)
    ddir.mkdir(parents=True, exist_ok=True)
    pid_path = ddir / PID_FILE
    running = read_pid(pid_path)
    if running:
        raise CliError(f"already running (pid {running['pid']}; `councils down` stops it)")
    log_path = ddir / LOG_FILE
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(launcher_command(ddir, config, http_port), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(ROOT))
    info = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "url": url}
    pid_path.write_text(json.dumps(info))
    if not opts.json:
        out(f"started the launcher (pid {proc.pid}); log: {log_path}")
    if no_wait:
        if opts.json:
            out(json.dumps({"pid": proc.pid, "log": str(log_path), "ready": None}))
        return 0
    deadline = time.time() + ready_timeout
    with live_status(f"waiting for {url}/readyz (log: {log_path})", enabled=not opts.json):
        while time.time() < deadline:
            if proc.poll() is not None:
                pid_path.unlink(missing_ok=True)
                tail = log_path.read_text(errors="replace").splitlines()[-15:]
                raise CliError(f"the launcher exited with {proc.returncode}:\n" + "\n".join(tail))
            try:
                if httpx.get(f"{url.rstrip('/')}/readyz", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            raise CliError(f"not ready within {ready_timeout:.0f}s (still starting? see {log_path})")
    if opts.json:
        out(json.dumps({"pid": proc.pid, "log": str(log_path), "ready": True}))
    else:
        out(f"ready on {url}")
    return 0


def down(opts: Options, data_dir_: DataDir = None,
         timeout: Annotated[float, typer.Option(help="seconds to wait after SIGINT")] = 120) -> int:
    """Stop the service started by `up`."""
    import psutil

    pid_path = data_dir(data_dir_) / PID_FILE
    info = read_pid(pid_path)
    if info is None:
        pid_path.unlink(missing_ok=True)
        out(json.dumps({"stopped": False, "running": False}) if opts.json else "not running")
        return 0
    proc = psutil.Process(int(info["pid"]))
    # SIGINT is the launcher's Ctrl-C: it stops Ray and Valkey, each by its process group.
    for sig, wait_s in ((signal.SIGINT, timeout), (signal.SIGTERM, 30.0)):
        try:
            proc.send_signal(sig)
            proc.wait(wait_s)
            break
        except psutil.NoSuchProcess:
            break
        except psutil.TimeoutExpired:
            continue
    else:
        raise CliError(f"pid {proc.pid} did not stop after SIGINT and SIGTERM")
    pid_path.unlink(missing_ok=True)
    out(json.dumps({"stopped": True, "pid": proc.pid}) if opts.json else f"stopped (pid {proc.pid})")
    return 0
