"""`make lint` holds in CI too: ruff (rules and format) and mypy are clean on the whole tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TREES = ["src", "stages", "flows", "tests", "benchmarks"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_ruff_is_clean():
    rules = _run(str(BIN / "ruff"), "check", *TREES)
    assert rules.returncode == 0, rules.stdout[-4000:]
    form = _run(str(BIN / "ruff"), "format", "--check", *TREES)
    assert form.returncode == 0, form.stdout[-4000:]


@pytest.mark.slow
def test_mypy_is_clean():
    result = _run(str(BIN / "mypy"), "src", "stages", "flows")
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Success" in result.stdout
