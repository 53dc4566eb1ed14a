"""Screenshots of the Prefect run page of a small demo run, for docs/monitoring.md (headless Chromium).

    EXACT_MODE=test .venv/bin/python tests/flows/screenshot_run_page.py --out docs

Starts a local Prefect server on a free port (its database in a temporary folder), runs the two-batch
demo at CI size (tests/reliability/reliability_tools.py: 8 + 6 studies, 2 epochs) in a temporary git
workspace against it, then captures the second run's page (state, tags, task runs, logs) and its
summary artifact with ``chromium --headless --screenshot``. Prints what it wrote; takes a few minutes.
(A task run's own page renders an empty log panel in headless Chromium; its lines are on the run page.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests" / "reliability"))

_DRIVER = """
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
import flows.demo as demo
demo.run_demo(Path(sys.argv[1]), push=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, seconds: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the Prefect server exited")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"no Prefect server at {url} after {seconds:g} s")


def shoot(chromium: str, page: str, png: Path, height: int = 1100, budget_ms: int = 20000) -> None:
    """One PNG of ``page``: the virtual time budget lets the single-page UI fetch and render its data."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size=1440,{height}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={png}",
                page,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    from reliability_tools import DEMO_BATCHES, env, tiny_workspace

    tmp = Path(tempfile.mkdtemp(prefix="exact-run-page-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    base_env = env(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_LOGGING_LEVEL="WARNING")
    base_env.pop("PREFECT_API_URL", None)
    # The UI asks PREFECT_UI_API_URL for its data (default: port 4200, whatever --port says).
    server_env = {**base_env, "PREFECT_UI_API_URL": url, "PREFECT_SERVER_API_PORT": str(port)}
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(url, 300, server)
        ws = tiny_workspace(tmp, DEMO_BATCHES, epochs=2)
        subprocess.run(
            [sys.executable, "-c", _DRIVER, str(ws), str(REPO / "tests" / "reliability")],
            cwd=ws,
            env={**base_env, "PREFECT_API_URL": url},
            check=True,
        )
        runs = httpx.post(
            f"{url}/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 1}, timeout=30
        ).json()
        run = runs[0]
        artifacts = httpx.post(
            f"{url}/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}, "key": {"any_": ["retrain-summary"]}}},
            timeout=30,
        ).json()
        ui = f"http://127.0.0.1:{port}"
        args.out.mkdir(parents=True, exist_ok=True)
        written = {
            "monitoring_run_page.png": (f"{ui}/runs/flow-run/{run['id']}", 1100),
            "monitoring_summary_artifact.png": (f"{ui}/artifacts/artifact/{artifacts[0]['id']}", 1300),
        }
        for name, (address, height) in written.items():
            shoot(args.chromium, address, args.out / name, height)
            print(f"{args.out / name}: {address}")
        print(f"run {run['name']}: state {run['state_name']}, tags {run['tags']}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
