"""End to end: two hospital batches through the Prefect retrain flow and every DVC stage, at tiny size.

The second run must rerun only the new batch's per-batch stages (plus the shared ones) and publish
again; a third run finds nothing new. This is the story `make demo` tells, shrunk to fit CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tiny_workspace(tmp_path: Path) -> Path:
    """A fresh clone-like workspace: the git-tracked files only, its own git, DVC and remote."""
    ws = tmp_path / "ws"
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            dst = ws / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run(["git", "add", "-A"], cwd=ws, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], cwd=ws, check=True
    )

    yaml = YAML()
    params_path = ws / "params.yaml"
    params = yaml.load(params_path.read_text())
    params["batches"] = []
    params["demo"]["batches"] = {"e2e-b1": 8, "e2e-b2": 6}
    grid = params["build_dataset"]["profiles"]["cpu-demo"]
    grid["spacing_xyz_mm"], grid["size_xyz"] = [12.0, 12.0, 12.0], [32, 24, 24]
    train = params["train"]["profiles"]["cpu-demo"]
    train["epochs"], train["pseudo_mask_epochs"] = 1, 1
    train["network"]["channels"] = [4, 8, 16]
    train["network"]["organ_deep_supervision"] = 1
    params["evaluate"]["bootstrap"] = 20
    with open(params_path, "w") as f:
        yaml.dump(params, f)
    return ws


@pytest.mark.slow
def test_two_batches_through_prefect_and_dvc(prefect_harness, tmp_path):
    from flows.demo import run_demo
    from flows.retrain import retrain

    ws = _tiny_workspace(tmp_path)
    first, second = run_demo(ws, push=True)

    stages = {s["stage"]: s for s in first["stages"]}
    assert first["batches"] == ["e2e-b1"]
    for name in ("ingest", "parse_reports", "pseudo_masks"):
        assert stages[name]["ran"] == [f"{name}@e2e-b1"], name
    for name in ("build_dataset", "train", "evaluate", "publish"):
        assert stages[name]["ran"] == [name], name
    decision1 = first["summary"]["publish"]  # what the first run's artifact reported
    assert decision1["promoted"] is True and decision1["status"] == "first"

    stages = {s["stage"]: s for s in second["stages"]}
    assert second["batches"] == ["e2e-b2"]
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

    third = retrain(repo=str(ws), push=False)
    assert third["status"] == "nothing new"
    # finetune@<task> is downstream work the flow leaves to `dvc repro`; the retrain chain must be clean.
    status = subprocess.run([str(BIN / "dvc"), "status", "--quiet", "--with-deps", "publish"], cwd=ws)
    assert status.returncode == 0
