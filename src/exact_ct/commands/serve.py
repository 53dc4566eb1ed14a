"""Serve the Prefect `retrain` flow on a cron schedule (a long-running process; Ctrl-C stops it).

Schedules need a Prefect server with its scheduler running: the temporary server Prefect starts on its
own when ``PREFECT_API_URL`` is unset cannot schedule (a served deployment would never fire). So the
command needs ``PREFECT_API_URL`` pointing at a running server, or ``--start-server`` to start one on
127.0.0.1 for the life of this process; otherwise it stops at once with an error saying so.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


class ServeError(RuntimeError):
    pass


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cron", default="0 2 * * *", help='cron schedule (default "0 2 * * *": 02:00 daily)')
    p.add_argument("--inbox", type=Path, default=None, help="drops folder (default: <repo>/data/inbox)")
    p.add_argument(
        "--repo", type=Path, default=Path("."), help="project checkout (default: current directory)"
    )
    p.add_argument("--name", default="exact-retrain", help="deployment name shown in the Prefect UI")
    p.add_argument(
        "--start-server",
        action="store_true",
        help="start a local Prefect server on 127.0.0.1 for this process (when PREFECT_API_URL is unset)",
    )
    p.add_argument("--port", type=int, default=4200, help="port of the server --start-server starts")
    p.add_argument(
        "--server-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the Prefect server to answer (default 300)",
    )


def server_healthy(api_url: str, timeout: float = 5.0) -> bool:
    """True when ``<api_url>/health`` answers 200."""
    import httpx

    try:
        return httpx.get(api_url.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for_server(api_url: str, seconds: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server_healthy(api_url):
            return
        if proc is not None and proc.poll() is not None:
            raise ServeError(f"the Prefect server exited with code {proc.returncode} before answering")
        time.sleep(1.0)
    raise ServeError(f"no Prefect server answers at {api_url} after {seconds:g} s")


def start_local_server(port: int, seconds: float) -> tuple[subprocess.Popen, str]:
    """Start ``prefect server start`` on 127.0.0.1:``port`` and wait until it answers."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise ServeError(f"port {port} on 127.0.0.1 is in use; pick another with --port")
    prefect = Path(sys.executable).with_name("prefect")
    proc = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for_server(url, seconds, proc)
    except BaseException:
        proc.terminate()
        proc.wait(30)
        raise
    return proc, url


def run(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from exact_ct.commands.retrain import import_flows

    repo = args.repo.resolve()
    module = import_flows(repo)
    server: subprocess.Popen | None = None
    url = str(PREFECT_API_URL.value() or "")
    try:
        if not url:
            if not args.start_server:
                print(
                    "exact serve: error: a schedule needs a running Prefect server; the temporary server "
                    "Prefect starts when PREFECT_API_URL is unset cannot schedule, so the flow would never "
                    "run. Start one (`make server`, or `prefect server start --host 127.0.0.1`) and set "
                    "PREFECT_API_URL=http://127.0.0.1:4200/api, or pass --start-server.",
                    file=sys.stderr,
                )
                return 2
            server, url = start_local_server(args.port, args.server_timeout)
            print(f"exact serve: started a Prefect server at {url} (UI: {url.removesuffix('/api')})")
        else:
            wait_for_server(url, args.server_timeout)
        # Flow runs start in child processes: they must reach the same server and import flows/.
        os.environ["PREFECT_API_URL"] = url
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p
        )
        params = {"repo": str(repo), "inbox": str(args.inbox.resolve()) if args.inbox else None}
        os.chdir(repo)  # the runner starts each flow run from flows/retrain.py relative to here
        print(f"exact serve: deployment 'retrain/{args.name}' on cron {args.cron!r}; Ctrl-C stops it")
        with temporary_settings({PREFECT_API_URL: url}):
            module.retrain.serve(name=args.name, cron=args.cron, parameters=params)
    except ServeError as e:
        print(f"exact serve: error: {e}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return 0
