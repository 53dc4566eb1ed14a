"""`exact serve --cron`: refuses to start without a scheduling server; with one, a schedule fires."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

BIN = Path(sys.executable).parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_HOME=str(tmp_path / "prefect-home"),  # no profile with an API URL
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        **extra,
    )
    return env


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "flows").mkdir(parents=True)
    repo = Path(__file__).resolve().parents[2]
    for name in ("__init__.py", "retrain.py", "dvc_tasks.py", "monitoring.py", "config.py", "git_tasks.py"):
        (ws / "flows" / name).write_bytes((repo / "flows" / name).read_bytes())
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=ws, check=True)
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": {}}))
    (ws / "params.yaml").write_text("seed: 1\nbatches: []\n")
    return ws


def test_serve_without_a_server_stops_at_once_with_a_clear_error(tmp_path):
    ws = _workspace(tmp_path)
    proc = subprocess.run(
        [str(BIN / "exact"), "serve", "--cron", "* * * * *", "--repo", str(ws)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,  # the old command served forever on the temporary server and never fired
    )
    assert proc.returncode == 2
    assert "PREFECT_API_URL" in proc.stderr and "cannot schedule" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_a_one_minute_schedule_fires_against_a_local_server(tmp_path):
    ws = _workspace(tmp_path)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = _env(tmp_path)
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    serve = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "the Prefect server exited"
            time.sleep(1)
        else:
            pytest.fail("the Prefect server did not start in 240 s")
        log = (tmp_path / "serve.log").open("w")
        serve = subprocess.Popen(
            [str(BIN / "exact"), "serve", "--cron", "* * * * *", "--repo", str(ws), "--name", "t"],
            env=_env(tmp_path, PREFECT_API_URL=url),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # A cron of every minute: the first run is due within 60 s; the runner polls every 10 s.
        completed = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not completed:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            runs = httpx.post(f"{url}/flow_runs/filter", json={}, timeout=10).json()
            completed = [r for r in runs if r["state_type"] == "COMPLETED" and r.get("deployment_id")]
            failed = [r for r in runs if r["state_type"] in ("FAILED", "CRASHED")]
            assert not failed, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(2)
        assert completed, (
            "no scheduled run completed within 240 s:\n" + (tmp_path / "serve.log").read_text()[-3000:]
        )
        deployment = httpx.get(f"{url}/deployments/{completed[0]['deployment_id']}", timeout=10).json()
        assert deployment["name"] == "t"
        assert completed[0]["parameters"]["repo"] == str(ws.resolve())
    finally:
        if serve is not None:
            _stop(serve)
        _stop(server)
