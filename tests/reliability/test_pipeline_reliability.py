"""The two-batch demo through Prefect and DVC on a tiny workspace, then three questions about it:

1. privacy: identifiers planted in DICOM headers and reports appear in no output, log or Prefect database,
   and neither does the pseudonymisation key;
2. determinism: ``dvc repro --force`` of the data stages rewrites byte-identical outputs, ``dvc status`` clean;
3. fault injection: ``kill -9`` at seeded random points of ingest, pseudo_masks, build_dataset and train
   leaves no partial file where a later stage reads, and the rerun (``dvc repro <stage>``) gives the
   uninterrupted run's bytes (for train: the documented resume, bit-identical weights on CPU).

One workspace serves all three and tests/e2e (the demo is the expensive part: the session fixture
``two_batch_demo`` of tests/conftest.py runs it once); the tests run in file order.
"""

from __future__ import annotations

import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from reliability_tools import (
    BIN,
    env,
    hidden_files,
    is_atomic_temp,
    run,
    run_and_kill,
    search,
    tree,
)
from reliability_tools import DEMO_KEY as KEY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(two_batch_demo: dict[str, Any]) -> dict[str, Any]:
    """The session's two-batch demo run (tests/conftest.py), shared with tests/e2e."""
    return two_batch_demo


def test_privacy_no_planted_identifier_or_key_anywhere(demo: dict[str, Any]) -> None:
    ws: Path = demo["ws"]
    needles: list[str] = demo["needles"]
    assert [r["status"] for r in demo["results"]] == ["ran", "ran"]
    # Positive controls: the identifiers are really in the input, and the search sees them there.
    raw_hits = {n for _, n in search([ws / "data" / "raw"], needles)}
    assert {"ZQXB1PRIVATEVALUE", "ZQXB2NESTDOC^PAUL", "ZQXB1OPERATOR", "19230817"} <= raw_hits
    dbs = sorted(demo["prefect_home"].rglob("*.db"))
    assert dbs, "the flow's Prefect database was not found under PREFECT_HOME"
    assert search(dbs, ["retrain"]), "the Prefect database does not hold the flow runs"
    assert (ws / "models" / "registry").is_dir() and (ws / "reports" / "evaluate" / "index.html").is_file()

    roots = [
        ws / "data" / "interim",
        ws / "data" / "processed",
        ws / "data" / "checkpoints",
        ws / "models",
        ws / "reports",
        demo["prefect_home"],
        demo["logs"],
    ]
    assert search(roots, needles) == []
    assert search([*roots, ws / "params.yaml", ws / "dvc.lock", ws / ".dvc" / "tmp"], [KEY]) == []


# --------------------------------------------------------------------------------------------- determinism

DATA_OUTS = {
    "ingest@e2e-b2": ["data/interim/ingest/e2e-b2", "reports/ingest/e2e-b2.json"],
    "parse_reports@e2e-b2": ["data/interim/parse_reports/e2e-b2", "reports/parse_reports/e2e-b2.json"],
    "pseudo_masks@e2e-b2": ["data/interim/pseudo_masks/e2e-b2", "reports/pseudo_masks/e2e-b2.json"],
    "build_dataset": ["data/processed/build_dataset", "reports/build_dataset"],
}


def _snapshot(ws: Path, outs: list[str]) -> dict[str, bytes]:
    snap: dict[str, bytes] = {}
    for o in outs:
        p = ws / o
        if p.is_file():
            snap[o] = p.read_bytes()
        else:
            snap.update({f"{o}/{k}": v for k, v in tree(p).items()})
    return snap


def _dvc(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "dvc"), *args], ws, EXACT_PSEUDONYM_KEY=KEY)


def _status_clean(ws: Path) -> bool:
    """`dvc status` of the stages the retrain flow runs (publish and everything upstream of it).

    Stages outside the flow (e.g. finetune@<task>, run on demand) are not part of the demo's promise.
    """
    cmd = [str(BIN / "dvc"), "status", "--quiet", "--with-deps", "publish"]
    return subprocess.run(cmd, cwd=ws, env=env(EXACT_PSEUDONYM_KEY=KEY)).returncode == 0


def test_forced_repro_of_data_stages_is_byte_identical_and_status_clean(demo: dict[str, Any]) -> None:
    ws: Path = demo["ws"]
    outs = [o for v in DATA_OUTS.values() for o in v]
    before = _snapshot(ws, outs)
    assert len(before) > 20
    _dvc(ws, "repro", "--force", "--single-item", *DATA_OUTS)
    after = _snapshot(ws, outs)
    assert sorted(after) == sorted(before)
    assert [k for k in before if before[k] != after[k]] == []
    assert _status_clean(ws)  # train, evaluate and publish did not become stale either


# --------------------------------------------------------------------------------------------- kill -9


def _stage_cmd(ws: Path, stage: str) -> list[str]:
    """The stage's command from dvc.yaml, with ${item} resolved (what `dvc repro` would run)."""
    name, _, item = stage.partition("@")
    spec = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"][name]
    cmd = (spec["do"] if "foreach" in spec else spec)["cmd"].replace("${item}", item)
    argv = shlex.split(cmd)
    return [sys.executable, *argv[1:]] if argv[0] == "python" else argv


def _seconds(demo: dict[str, Any], stage: str) -> float:
    name = stage.partition("@")[0]
    return max(float(s["seconds"]) for s in demo["results"][1]["stages"] if s["stage"] == name)


KILL_OUTS = {
    "ingest@e2e-b2": DATA_OUTS["ingest@e2e-b2"],
    "pseudo_masks@e2e-b2": DATA_OUTS["pseudo_masks@e2e-b2"],
    "build_dataset": DATA_OUTS["build_dataset"],
}


@pytest.mark.parametrize("stage", list(KILL_OUTS))
def test_kill9_data_stage_leaves_no_partial_file_and_rerun_is_identical(
    demo: dict[str, Any], stage: str
) -> None:
    ws: Path = demo["ws"]
    outs = KILL_OUTS[stage]
    reference = _snapshot(ws, outs)
    cmd, seconds = _stage_cmd(ws, stage), _seconds(demo, stage)
    rng = random.Random(f"kill:{stage}")
    killed = 0
    for _ in range(3):
        for o in outs:  # as `dvc repro` does: the stage starts without its outs
            shutil.rmtree(ws / o, ignore_errors=True) if (ws / o).is_dir() else (ws / o).unlink(
                missing_ok=True
            )
        started = time.monotonic()
        was_killed, _ = run_and_kill(cmd, ws, rng.uniform(0.15, 0.9) * seconds, EXACT_PSEUDONYM_KEY=KEY)
        killed += was_killed
        if not was_killed:
            # The demo's stage time can be well above a lone rerun's (load, cold caches): the next
            # kill falls inside the duration this run actually took.
            seconds = min(seconds, time.monotonic() - started)
        # Whatever a later stage could read is complete: every visible file is the reference's bytes.
        partial = _snapshot(ws, outs)
        assert [k for k in partial if reference.get(k) != partial[k]] == []
        for o in outs:
            if (ws / o).is_dir():
                assert all(is_atomic_temp(ws / o / h) for h in hidden_files(ws / o)), hidden_files(ws / o)
    assert killed >= 1, f"{stage}: no run was killed before it finished ({seconds:.1f} s)"
    _dvc(ws, "repro", "--single-item", stage)
    assert _snapshot(ws, outs) == reference
    for o in outs:
        if (ws / o).is_dir():
            assert hidden_files(ws / o) == []
    assert _status_clean(ws)


def test_kill9_train_resumes_to_the_uninterrupted_weights(demo: dict[str, Any]) -> None:
    import torch

    ws: Path = demo["ws"]
    package, checkpoints = ws / "models" / "candidate", ws / "data" / "checkpoints" / "train"
    reference = tree(package)
    reference_metrics = (ws / "reports" / "train" / "metrics.json").read_bytes()
    assert reference
    shutil.rmtree(package)
    shutil.rmtree(checkpoints)  # a fresh start, then three kills in a row, each resuming the last
    cmd, seconds = _stage_cmd(ws, "train"), _seconds(demo, "train")
    rng = random.Random("kill:train")
    killed = 0
    for _ in range(3):
        started = time.monotonic()
        was_killed, _ = run_and_kill(cmd, ws, rng.uniform(0.3, 0.9) * seconds, EXACT_PSEUDONYM_KEY=KEY)
        killed += was_killed
        if not was_killed:
            # The demo's stage time can be well above a lone rerun's (load, cold caches): the next
            # kill falls inside the duration this run actually took.
            seconds = min(seconds, time.monotonic() - started)
        partial = tree(package)
        assert [k for k in partial if reference.get(k) != partial[k]] == []  # the package: all or nothing
        for ckpt in sorted(checkpoints.glob("*.pt")) if checkpoints.is_dir() else []:
            torch.load(ckpt, map_location="cpu", weights_only=True)  # every visible checkpoint loads
        if checkpoints.is_dir():
            assert all(is_atomic_temp(checkpoints / h) for h in hidden_files(checkpoints))
    assert killed >= 1
    _dvc(ws, "repro", "--single-item", "train")
    assert tree(package) == reference
    assert (ws / "reports" / "train" / "metrics.json").read_bytes() == reference_metrics
    assert _status_clean(ws)
