"""The retrain flow runs in the installed environment and registers drops into a DVC workspace."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exact_ct.batches import COMPLETE_MARKER

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _workspace(tmp_path: Path, dvc_yaml: dict) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=ws, check=True)
    (ws / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    (ws / "params.yaml").write_text("seed: 1\nbatches: []\n")
    return ws


def _drop(root: Path, name: str, complete: bool = True) -> Path:
    drop = root / name
    (drop / "dicom").mkdir(parents=True)
    (drop / "dicom" / "a.dcm").write_bytes(b"not really dicom")
    (drop / "reports.csv").write_text("accession_number,patient_id,findings,impression\n")
    if complete:
        (drop / COMPLETE_MARKER).write_text("")
    return drop


def test_prefect_flow_runs_in_installed_environment(prefect_harness):
    from prefect import flow, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def tiny(n: int) -> int:
        return sum(double(i) for i in range(n))

    assert tiny(4) == 12


def test_retrain_registers_complete_drops_and_runs_stages(prefect_harness, tmp_path):
    from flows.retrain import retrain

    # A one-stage pipeline that counts the files of each registered batch: enough to see DVC at work.
    dvc_yaml = {
        "stages": {
            "count": {
                "foreach": "${batches}",
                "do": {
                    "cmd": "python -c \"import os,sys; n=sum(len(f) for _,_,f in os.walk('data/raw/${item}')); "
                    "os.makedirs('out', exist_ok=True); open('out/${item}.txt','w').write(str(n))\"",
                    "deps": ["data/raw/${item}"],
                    "outs": ["out/${item}.txt"],
                },
            }
        }
    }
    ws = _workspace(tmp_path, dvc_yaml)
    inbox = ws / "data" / "inbox"
    _drop(inbox, "b1")
    _drop(inbox, "b2", complete=False)  # still being copied by the hospital: must be left alone

    first = retrain(repo=str(ws), push=False)
    assert first["batches"] == ["b1"]
    assert (ws / "data" / "raw" / "b1" / "reports.csv").exists()
    assert (inbox / "b2").exists() and not (ws / "data" / "raw" / "b2").exists()
    assert yaml.safe_load((ws / "params.yaml").read_text())["batches"] == ["b1"]
    assert first["stages"][0]["ran"] == ["count@b1"]
    assert (ws / "out" / "b1.txt").read_text() == "3"

    (inbox / "b2" / COMPLETE_MARKER).write_text("")
    second = retrain(repo=str(ws), push=False)
    assert second["batches"] == ["b2"]
    assert second["stages"][0]["ran"] == ["count@b2"]
    assert second["stages"][0]["skipped"] == ["count@b1"]

    third = retrain(repo=str(ws), push=False)
    assert third["status"] == "nothing new"


def test_failing_stage_fails_the_flow_naming_the_stage(prefect_harness, tmp_path):
    from flows.dvc_tasks import StageFailed
    from flows.retrain import retrain

    dvc_yaml = {
        "stages": {
            "broken": {
                "foreach": "${batches}",
                "do": {"cmd": "python -c 'import sys; sys.exit(3)'", "deps": ["data/raw/${item}"]},
            }
        }
    }
    ws = _workspace(tmp_path, dvc_yaml)
    _drop(ws / "data" / "inbox", "b1")
    with pytest.raises(StageFailed, match="broken"):
        retrain(repo=str(ws), push=False)
    shutil.rmtree(ws)
