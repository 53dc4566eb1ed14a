"""Fast checks of what the flows and dvc.yaml declare: headline metrics, git-ignored checkpoints, the
model artifact, typed flow params, the gate-first summary and the commit message."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _declared(kind: str) -> list[str]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in stages.values():
        body = stage.get("do", stage)
        for entry in body.get(kind, []):
            paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def test_one_small_headline_metrics_file_and_the_registry_as_a_model_artifact():
    assert _declared("metrics") == ["reports/publish/metrics.json"]
    outs = _declared("outs")
    # the summaries that used to be metrics are still outs (git-tracked, `dvc metrics show FILE` reads them)
    for path in (
        "reports/evaluate/metrics.json",
        "reports/publish/decision.json",
        "reports/finetune/${key}.json",
    ):
        assert path in outs, path
    artifacts = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    assert artifacts["exact-ct"]["path"] == "models/registry" and artifacts["exact-ct"]["type"] == "model"


def test_gitignore_keeps_checkpoints_out_and_metrics_in(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=tmp_path).returncode == 0

    assert ignored("data/checkpoints/train/last.pt")
    for path in (
        "reports/publish/metrics.json",
        "reports/evaluate/metrics.json",
        "reports/train/plots/metrics/train/loss.tsv",
        "data/raw/b1.dvc",
        "data/raw/.gitignore",
    ):
        assert not ignored(path), path


def test_flow_params_are_typed_and_the_demo_sizes_come_from_params(tmp_path):
    from exact_ct.config import ConfigError
    from flows.config import demo_config, retrain_config, train_epochs

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = retrain_config(REPO)
    assert cfg.skip_stages == tuple(params["retrain"]["skip_stages"]) and cfg.git_commit is True
    assert demo_config(REPO).batches == params["demo"]["batches"]
    assert train_epochs(REPO) == params["train"]["profiles"]["cpu-demo"]["epochs"]
    (tmp_path / "params.yaml").write_text("retrain: {settle_seconds: soon}\ndemo: {batches: {}}\n")
    with pytest.raises(ConfigError, match="settle_seconds"):
        retrain_config(tmp_path)
    with pytest.raises(ConfigError, match="demo.batches is empty"):
        demo_config(tmp_path)


REJECTED = {
    "status": "rejected",
    "promoted": False,
    "version": None,
    "champion": "0.1.0",
    "reason": "rejected: macro AUROC drops 0.0300 > max_macro_drop 0.02; Lung nodule: AUROC drops 0.0800 > max_label_drop 0.05",
    "failures": [
        "macro AUROC drops 0.0300 > max_macro_drop 0.02",
        "Lung nodule: AUROC drops 0.0800 > max_label_drop 0.05",
    ],
    "differences": {"macro_auroc": {"candidate": 0.61, "champion": 0.64, "delta": -0.03}},
}


def test_the_summary_opens_with_the_gate_decision_and_stays_short():
    from flows.monitoring import batch_summary_markdown

    ingest = {"studies": 160, "quarantined": 2, "by_rule": {f"rule_{i}": i for i in range(30)}}
    summary = {
        "new_batches": ["b2"],
        "stages": [
            {"stage": s, "ran": [s], "skipped": [], "seconds": 1.0} for s in ("ingest", "train", "publish")
        ],
        "per_batch": {"b2": {"ingest": ingest, "parse_reports": {"reports": 160, "quarantined": 0}}},
        "drift": [],
        "publish": REJECTED,
        "git": {"commit": "0123456789abcdef", "tag": None},
    }
    text = batch_summary_markdown(summary)
    lines = text.splitlines()
    assert lines[:5] == [
        "# Gate: REJECTED",
        "",
        "Rejected because:",
        "- macro AUROC drops 0.0300 > max_macro_drop 0.02",
        "- Lung nodule: AUROC drops 0.0800 > max_label_drop 0.05",
    ]
    assert "| | 0.6100 | 0.6400 | -0.0300 |" in lines
    assert "The champion stays version 0.1.0." in lines and "`0123456789ab`" in text
    assert "| b2 | ingest | studies 160, quarantined 2 |" in lines  # nested breakdowns stay in the JSON
    assert len(lines) < 40


def test_commit_message_names_batches_and_the_gate():
    from flows.retrain import commit_message

    results = [{"stage": "ingest", "ran": ["ingest@b2"], "skipped": ["ingest@b1"], "seconds": 1.0}]
    message = commit_message(["b2"], results, REJECTED)
    subject, _, body = message.partition("\n\n")
    assert subject == "retrain: batches b2; gate rejected"
    assert body.startswith("rejected: macro AUROC drops") and "ingest: ran ingest@b2" in body
    promoted = {**REJECTED, "status": "promoted", "promoted": True, "version": "0.2.0", "reason": "promoted"}
    assert commit_message([], [], promoted).startswith(
        "retrain: no new batch (stale stages rerun); gate promoted as 0.2.0"
    )
    assert commit_message(["b1"], [], None).startswith("retrain: batches b1; gate not run")


def test_the_command_line_does_not_print_every_http_request():
    import logging

    from exact_ct.logs import setup_logging

    setup_logging()
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("presidio-analyzer").getEffectiveLevel() == logging.ERROR
    setup_logging(verbose=True)
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG
    setup_logging()


def test_a_stage_past_its_time_limit_is_stopped_with_its_command(tmp_path):
    import sys
    import time

    from flows.dvc_tasks import StageTimedOut, repro

    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([str(Path(sys.executable).with_name("dvc")), "init", "-q"], cwd=ws, check=True)
    # the stage writes its pid, then would sleep for 10 minutes
    cmd = "python -c \"import os,time; open('pid','w').write(str(os.getpid())); print('started', flush=True); time.sleep(600)\""
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"slow": {"cmd": cmd}}}))
    lines: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(StageTimedOut, match="'slow' stopped after the 5 s time limit"):
        repro("slow", ws, on_line=lines.append, timeout=5)
    assert time.monotonic() - t0 < 60 and "started" in lines  # streamed while it ran
    pid = int((ws / "pid").read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
