"""The retrain flow runs in the installed environment and registers drops into a DVC workspace."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
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
    subprocess.run([str(BIN / "dvc"), "remote", "add", "-d", "local", "../remote"], cwd=ws, check=True)
    shutil.copy(REPO / ".gitignore", ws / ".gitignore")  # the project's ignore rules decide what DVC sees
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

    first = retrain(repo=str(ws), push=False, settle_seconds=0)
    assert first["batches"] == ["b1"]
    assert (ws / "data" / "raw" / "b1" / "reports.csv").exists()
    assert (inbox / "b2").exists() and not (ws / "data" / "raw" / "b2").exists()
    assert yaml.safe_load((ws / "params.yaml").read_text())["batches"] == ["b1"]
    assert first["stages"][0]["ran"] == ["count@b1"]
    assert (ws / "out" / "b1.txt").read_text() == "3"

    (inbox / "b2" / COMPLETE_MARKER).write_text("")
    second = retrain(repo=str(ws), push=False, settle_seconds=0)
    assert second["batches"] == ["b2"]
    assert second["stages"][0]["ran"] == ["count@b2"]
    assert second["stages"][0]["skipped"] == ["count@b1"]

    third = retrain(repo=str(ws), push=False, settle_seconds=0)
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
        retrain(repo=str(ws), push=False, settle_seconds=0)
    shutil.rmtree(ws)


# ------------------------------------------------------------------ hostile input and faults (issue 22)

COUNT_STAGE = {
    "stages": {
        "count": {
            "foreach": "${batches}",
            "do": {
                # sleeps while the file `slow` exists, so a test can kill a run in the middle of a stage
                "cmd": "python -c \"import os,time; open('started','w').close(); "
                "[time.sleep(0.2) for _ in range(600) if os.path.exists('slow')]; "
                "n=sum(len(f) for _,_,f in os.walk('data/raw/${item}')); "
                "os.makedirs('out', exist_ok=True); open('out/${item}.txt','w').write(str(n))\"",
                "deps": ["data/raw/${item}"],
                "outs": ["out/${item}.txt"],
            },
        }
    }
}


def _remote_has(ws: Path, path: Path) -> bool:
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    return (ws.parent / "remote" / "files" / "md5" / digest[:2] / digest[2:]).is_file()


def test_links_and_malformed_drops_are_set_aside_and_the_rest_is_registered_and_pushed(
    prefect_harness, tmp_path
):
    from flows.retrain import retrain

    ws = _workspace(tmp_path, COUNT_STAGE)
    inbox = ws / "data" / "inbox"
    good = _drop(inbox, "b1")
    (good / "dicom" / "passwd.dcm").symlink_to("/etc/passwd")
    (good / "dicom" / "environ.dcm").symlink_to("/proc/self/environ")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.dcm").write_text("OUTSIDE-SECRET")
    (good / "dicom" / "linked").symlink_to(outside, target_is_directory=True)
    (_drop(inbox, "b2") / "reports.csv").unlink()  # malformed: no reports.csv
    shutil.rmtree(_drop(inbox, "b3") / "dicom")  # malformed: no images
    _drop(inbox, "b4")

    result = retrain(repo=str(ws), push=True, settle_seconds=0)
    assert result["batches"] == ["b1", "b4"] and result["set_aside"] == ["b2", "b3"]
    raw = ws / "data" / "raw"
    for batch in ("b1", "b4"):
        files = sorted(p.relative_to(raw / batch).as_posix() for p in (raw / batch).rglob("*"))
        assert files == [COMPLETE_MARKER, "dicom", "dicom/a.dcm", "reports.csv"]
        # item 14: the raw batch itself is in the DVC remote, not only the stage outputs
        assert _remote_has(ws, raw / batch / "dicom" / "a.dcm") and _remote_has(
            ws, raw / batch / "reports.csv"
        )
    assert _remote_has(ws, ws / "out" / "b1.txt")
    quarantine = inbox / "_quarantine"
    assert sorted(p.name for p in quarantine.iterdir()) == ["b1", "b2", "b3"]
    rules = {r["path"]: r["rule"] for r in csv.DictReader((quarantine / "b1" / "reasons.csv").open())}
    assert rules == {"dicom/environ.dcm": "symlink", "dicom/linked": "symlink", "dicom/passwd.dcm": "symlink"}
    assert next(csv.DictReader((quarantine / "b2" / "reasons.csv").open()))["rule"] == "missing_reports"
    assert next(csv.DictReader((quarantine / "b3" / "reasons.csv").open()))["rule"] == "no_images"
    assert (outside / "x.dcm").read_text() == "OUTSIDE-SECRET"
    cache = b"".join(p.read_bytes() for p in (ws / ".dvc" / "cache").rglob("*") if p.is_file())
    assert b"root:" not in cache and b"OUTSIDE-SECRET" not in cache and b"PATH=" not in cache


_RUN_FLOW = """
import sys
sys.path.insert(0, sys.argv[2])
from flows.retrain import retrain
print(retrain(repo=sys.argv[1], push=False, settle_seconds=0)["status"])
"""


def _child_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # the session's test server
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):  # grandchildren share the group; wait until none is left
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_run_killed_with_sigkill_never_blocks_the_next_run(prefect_harness, tmp_path):
    ws = _workspace(tmp_path, COUNT_STAGE)
    _drop(ws / "data" / "inbox", "b1")
    (ws / "slow").touch()
    env = _child_env()
    first = subprocess.Popen(
        [sys.executable, "-c", _RUN_FLOW, str(ws), str(REPO)], cwd=ws, env=env, start_new_session=True
    )
    try:
        assert _wait_for(lambda: (ws / "started").exists(), 240), "the first run never reached its stage"
    finally:
        _kill_group(first)  # kill -9 in the middle of `dvc repro`, holding the workspace lock
    (ws / "slow").unlink()
    second = subprocess.run(
        [sys.executable, "-c", _RUN_FLOW, str(ws), str(REPO)],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip().splitlines()[-1] == "ran"
    assert (ws / "out" / "b1.txt").read_text() == "3"


def test_registration_killed_during_dvc_add_is_finished_by_the_next_run(prefect_harness, tmp_path):
    import psutil

    from flows.retrain import retrain

    ws = _workspace(tmp_path, COUNT_STAGE)
    drop = _drop(ws / "data" / "inbox", "b1")
    child = subprocess.Popen(
        [str(BIN / "exact"), "register", str(drop), "--batch", "b1", "--repo", str(ws)],
        cwd=ws,
        env=_child_env(),
        start_new_session=True,
    )

    def dvc_add_running() -> bool:
        try:
            kids = psutil.Process(child.pid).children(recursive=True)
            return any("add" in k.cmdline() and any("dvc" in c for c in k.cmdline()) for k in kids)
        except psutil.Error:
            return False

    try:
        assert _wait_for(dvc_add_running, 120), "`dvc add` never started"
    finally:
        _kill_group(child)
    assert yaml.safe_load((ws / "params.yaml").read_text())["batches"] == []  # killed before the end
    assert (ws / "data" / "raw" / "b1").is_dir() and not drop.exists()

    result = retrain(repo=str(ws), push=False, settle_seconds=0)
    assert result["status"] == "ran" and result["batches"] == ["b1"]
    assert yaml.safe_load((ws / "params.yaml").read_text())["batches"] == ["b1"]
    assert (ws / "data" / "raw" / "b1.dvc").is_file() and (ws / "out" / "b1.txt").read_text() == "3"
    status = subprocess.run([str(BIN / "dvc"), "status", "--quiet"], cwd=ws)
    assert status.returncode == 0  # everything tracked and up to date
