"""Shared test fixtures: paths to the real data in ../shared/data, test mode, a Prefect test server, and
the two-batch demo run that the end-to-end and reliability suites both read."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

os.environ.setdefault("EXACT_MODE", "test")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (expected ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for all flow tests (starting one takes ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def two_batch_demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The two-batch demo through Prefect and DVC on a tiny workspace, run once per session.

    It is the expensive part of the suite (3-4 min on 2 cores), so one run serves tests/e2e (the story:
    what ran, what was skipped, what was published) and tests/reliability (privacy, determinism and
    kill -9 on the same workspace). See ``reliability_tools.run_two_batch_demo``.
    """
    tools = REPO / "tests" / "reliability"
    if str(tools) not in sys.path:
        sys.path.insert(0, str(tools))
    from reliability_tools import run_two_batch_demo

    return run_two_batch_demo(tmp_path_factory.mktemp("two-batch-demo"))
