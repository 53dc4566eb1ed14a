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


@pytest.mark.slow
def test_each_run_is_a_git_commit_and_dvc_shows_the_headline_metrics(two_batch_demo: dict[str, Any]) -> None:
    ws: Path = two_batch_demo["ws"]
    first, second = two_batch_demo["results"]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ws, capture_output=True, text=True, check=True
        ).stdout.strip()

    decision = second["summary"]["publish"]
    gate = f"promoted as {decision['version']}" if decision["promoted"] else decision["status"]
    assert git("log", "--format=%s").splitlines()[:2] == [
        f"retrain: batches e2e-b2; gate {gate}",
        "retrain: batches e2e-b1; gate promoted as 0.1.0",
    ]
    assert first["git"]["commit"] == git("rev-parse", "HEAD~1") and second["git"]["commit"] == git(
        "rev-parse", "HEAD"
    )
    assert git("rev-list", "-n1", "exact-ct@v0.1.0") == first["git"]["commit"]
    # what DVC and the flow wrote is committed; checkpoints and cached outputs are not in git
    assert git("status", "--porcelain", "--", "dvc.lock", "params.yaml", "data", "reports") == ""
    tracked = git("ls-files").splitlines()
    assert "reports/publish/metrics.json" in tracked and "reports/evaluate/metrics.json" in tracked
    assert not [
        p for p in tracked if p.startswith(("data/checkpoints/", "models/c", "models/r")) or p.endswith(".pt")
    ]
    package = json.loads((ws / "models" / "registry" / "0.1.0" / "package.json").read_text())
    assert package["git_revision"] == git("rev-parse", "HEAD~2")  # the commit the first run started from
    # the default views list the headline metrics only
    shown = subprocess.run(
        [str(BIN / "dvc"), "metrics", "show", "--json"], cwd=ws, capture_output=True, text=True, check=True
    )
    metrics = json.loads(shown.stdout)
    files = next(iter(metrics.values()))["data"]
    assert (
        list(files) == ["reports/publish/metrics.json"]
        and len(files["reports/publish/metrics.json"]["data"]) == 8
    )
    diff = subprocess.run(
        [str(BIN / "dvc"), "metrics", "diff", "HEAD~1", "--json"], cwd=ws, capture_output=True, text=True
    )
    assert diff.returncode == 0 and "test_macro_auroc" in diff.stdout
