"""What a retrain run leaves behind: a git commit (and a tag for a published version), a run whose state
says the gate's outcome, task runs named by stage, the stages' own lines in the run's logs, and a summary
artifact that opens with the gate decision."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import yaml

from exact_ct.batches import COMPLETE_MARKER

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# A stand-in publish stage: the outcome comes from the file `gate` in the workspace, the version from
# the number of versions already in models/registry; it writes what the real stage writes.
PUBLISH = r"""
import json, os, pathlib
outcome = pathlib.Path("gate").read_text().strip()
reg = pathlib.Path("models/registry"); reg.mkdir(parents=True, exist_ok=True)
n = len([p for p in reg.iterdir() if p.is_dir()])
print("publish: 12 test studies, macro AUROC 0.61", flush=True)
promoted = outcome == "promoted"
version = f"0.{n + 1}.0" if promoted else None
if promoted:
    (reg / version).mkdir()
    (reg / version / "model_card.md").write_text("# card\n")
reason = "promoted: no drop beyond the tolerances" if promoted else "rejected: macro AUROC drops 0.0300 > max_macro_drop 0.02"
decision = {"status": outcome, "promoted": promoted, "version": version, "champion": "0.1.0" if n else None,
            "reason": reason, "failures": [] if promoted else [reason[len("rejected: "):]],
            "differences": {"macro_auroc": {"candidate": 0.61, "champion": 0.64 if n else None, "delta": -0.03 if n else None}}}
os.makedirs("reports/publish", exist_ok=True)
pathlib.Path("reports/publish/decision.json").write_text(json.dumps(decision))
pathlib.Path("reports/publish/metrics.json").write_text(json.dumps({"test_macro_auroc": 0.61, "promoted": promoted}))
os.makedirs("reports/evaluate", exist_ok=True)
pathlib.Path("reports/evaluate/index.html").write_text("<html>report</html>")
"""

DVC_YAML = {
    "stages": {
        "count": {
            "foreach": "${batches}",
            "do": {
                "cmd": "python -c \"import os; n=sum(len(f) for _,_,f in os.walk('data/raw/${item}')); "
                "print('counted', n, 'files of ${item}', flush=True); "
                "os.makedirs('out', exist_ok=True); open('out/${item}.txt','w').write(str(n))\"",
                "deps": ["data/raw/${item}"],
                "outs": ["out/${item}.txt"],
            },
        },
        "publish": {
            "cmd": "python publish.py",
            "deps": ["out", "gate", "publish.py"],
            "outs": [
                {"models/registry": {"persist": True}},
                {"reports/evaluate/index.html": {"cache": False}},
            ],
            "metrics": [{"reports/publish/metrics.json": {"cache": False}}],
            "plots": [],
        },
    }
}


def _git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True).stdout.strip()


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    _git(ws, "init", "-q")
    _git(ws, "config", "user.name", "t")
    _git(ws, "config", "user.email", "t@t")
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=ws, check=True)
    shutil.copy(REPO / ".gitignore", ws / ".gitignore")
    del DVC_YAML["stages"]["publish"]["plots"]
    (ws / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    DVC_YAML["stages"]["publish"]["plots"] = []
    (ws / "params.yaml").write_text("seed: 1\nbatches: []\n")
    (ws / "publish.py").write_text(PUBLISH)
    (ws / "gate").write_text("promoted\n")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-qm", "init")
    return ws


def _drop(inbox: Path, name: str) -> None:
    (inbox / name / "dicom").mkdir(parents=True)
    (inbox / name / "dicom" / "a.dcm").write_bytes(b"not really dicom")
    (inbox / name / "reports.csv").write_text("accession_number,patient_id,findings,impression\n")
    (inbox / name / COMPLETE_MARKER).write_text("")


def _run_record(flow_run_id: UUID) -> dict:
    """State, tags, task run names, log lines and artifacts of one flow run, read back from the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {
        "state": run.state.name if run.state else None,
        "tags": run.tags,
        "tasks": sorted(t.name for t in tasks),
        "logs": [log.message for log in logs],
        "artifacts": {a.key: a for a in artifacts},
    }


def test_runs_are_committed_tagged_and_show_the_gate_on_the_run_page(prefect_harness, tmp_path):
    from flows.retrain import retrain

    ws = _workspace(tmp_path)
    inbox = ws / "data" / "inbox"
    _drop(inbox, "b1")

    state = retrain(repo=str(ws), push=False, settle_seconds=0, return_state=True)
    first = state.result()
    assert state.name == "Promoted" and first["status"] == "ran"
    # 1. the run ends in a commit of what DVC and the flow wrote, tagged with the published version
    head = _git(ws, "rev-parse", "HEAD")
    assert first["git"] == {"commit": head, "tag": "exact-ct@v0.1.0"}
    assert _git(ws, "log", "-1", "--format=%s") == "retrain: batches b1; gate promoted as 0.1.0"
    assert _git(ws, "rev-list", "-n1", "exact-ct@v0.1.0") == head
    committed = set(_git(ws, "show", "--name-only", "--format=", "HEAD").splitlines())
    assert {"dvc.lock", "params.yaml", "data/raw/b1.dvc", "reports/publish/metrics.json"} <= committed
    assert _git(ws, "status", "--porcelain", "--", "dvc.lock", "params.yaml", "data", "reports") == ""
    assert not any(p.startswith(("out/", "models/")) for p in committed)  # cached outs stay in DVC

    record = _run_record(state.state_details.flow_run_id)
    assert record["state"] == "Promoted" and "gate:promoted" in record["tags"]
    # 4. task runs named by stage; the stage's own output in the run's logs
    assert {"dvc-repro-count", "dvc-repro-publish", "git-commit"} <= set(record["tasks"])
    assert any("counted 3 files of b1" in m for m in record["logs"])
    assert any("publish: 12 test studies" in m for m in record["logs"])
    # 5. artifacts: summary with the gate first, links to the report and the card, progress at 100 %
    summary = record["artifacts"]["retrain-summary"].data
    assert summary.startswith("# Gate: PROMOTED\n")
    assert record["artifacts"]["evaluation-report"].data.startswith("[evaluation report (HTML)](file://")
    assert "model_card.md" in record["artifacts"]["model-card"].data
    assert record["artifacts"]["retrain-progress"].data == 100.0

    (ws / "gate").write_text("rejected\n")
    _drop(inbox, "b2")
    state = retrain(repo=str(ws), push=False, settle_seconds=0, return_state=True)
    second = state.result()
    assert state.name == "Rejected" and "max_macro_drop" in (state.message or "")
    assert second["git"]["tag"] is None and second["git"]["commit"] == _git(ws, "rev-parse", "HEAD")
    assert _git(ws, "log", "-1", "--format=%s") == "retrain: batches b2; gate rejected"
    assert "macro AUROC drops 0.0300 > max_macro_drop 0.02" in _git(ws, "log", "-1", "--format=%b")
    assert _git(ws, "tag", "--list") == "exact-ct@v0.1.0"
    record = _run_record(state.state_details.flow_run_id)
    assert record["state"] == "Rejected" and "gate:rejected" in record["tags"]
    summary = record["artifacts"]["retrain-summary"].data
    assert summary.splitlines()[:3] == ["# Gate: REJECTED", "", "Rejected because:"]
    assert "The champion stays version 0.1.0." in summary
    assert "model-card" not in record["artifacts"]  # no new version, no card to link

    third = retrain(repo=str(ws), push=False, settle_seconds=0)
    assert third["status"] == "nothing new"
    assert _git(ws, "log", "-1", "--format=%s") == "retrain: batches b2; gate rejected"  # no empty commit


def test_commit_can_be_switched_off(prefect_harness, tmp_path):
    from flows.retrain import retrain

    ws = _workspace(tmp_path)
    _drop(ws / "data" / "inbox", "b1")
    before = _git(ws, "rev-parse", "HEAD")
    result = retrain(repo=str(ws), push=False, settle_seconds=0, commit=False)
    assert result["git"] == {"commit": None, "tag": None}
    assert _git(ws, "rev-parse", "HEAD") == before and _git(ws, "tag", "--list") == ""
