"""End to end: two hospital batches through the Prefect retrain flow and every DVC stage, at tiny size.

The second run must rerun only the new batch's per-batch stages (plus the shared ones) and publish
again; a third run finds nothing new. This is the story `make demo` tells, shrunk to fit CI. The run
itself is the session fixture ``two_batch_demo`` (tests/conftest.py), which tests/reliability reads too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_two_batches_through_prefect_and_dvc(two_batch_demo: dict[str, Any]) -> None:
    ws: Path = two_batch_demo["ws"]
    first, second = two_batch_demo["results"]

    stages = {s["stage"]: s for s in first["stages"]}
    assert first["status"] == "ran" and first["batches"] == ["e2e-b1"]
    for name in ("ingest", "parse_reports", "pseudo_masks"):
        assert stages[name]["ran"] == [f"{name}@e2e-b1"], name
    for name in ("build_dataset", "train", "evaluate", "publish"):
        assert stages[name]["ran"] == [name], name
    decision1 = first["summary"]["publish"]  # what the first run's artifact reported
    assert decision1["promoted"] is True and decision1["status"] == "first"

    stages = {s["stage"]: s for s in second["stages"]}
    assert second["status"] == "ran" and second["batches"] == ["e2e-b2"]
    for name in ("ingest", "parse_reports", "pseudo_masks"):
        assert stages[name]["ran"] == [f"{name}@e2e-b2"], name
        assert stages[name]["skipped"] == [f"{name}@e2e-b1"], name
    for name in ("build_dataset", "train", "evaluate", "publish"):
        assert stages[name]["ran"] == [name], name

    decision2 = json.loads((ws / "reports" / "publish" / "decision.json").read_text())
    assert decision2 == second["summary"]["publish"] and decision2["status"] in {"promoted", "rejected"}
    assert (ws / "reports" / "evaluate" / "index.html").is_file()
    assert any((ws / "models" / "registry").iterdir())
    assert (ws / "dvc-remote").is_dir() and any((ws / "dvc-remote").rglob("*"))

    third = two_batch_demo["again"]
    assert third["status"] == "nothing new" and third["stages"] == []
    # finetune@<task> is downstream work the flow leaves to `dvc repro`; the retrain chain must be clean.
    status = subprocess.run([str(BIN / "dvc"), "status", "--quiet", "--with-deps", "publish"], cwd=ws)
    assert status.returncode == 0
