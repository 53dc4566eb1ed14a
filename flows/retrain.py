"""Prefect flow `retrain`: register complete drops from the inbox, run the DVC stages, push, commit, report."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import task_run
from prefect.states import Completed

from flows import dvc_tasks, git_tasks
from flows.config import retrain_config, train_epochs
from flows.monitoring import batch_summary_markdown, gate_headline, label_drift, stage_table

#: A train log line that closes an epoch (``exact_ct.training.loop``: "epoch 3: loss ..."; 0-based).
_EPOCH = re.compile(r"\bepoch (\d+): loss")
#: DVC's hints after a stage (git add, autostage, dvc push): the flow does both itself, so they only mislead.
_DVC_HINTS = re.compile(
    r"^(To track the changes with git, run:|To enable auto staging, run:|\s+git add .*|"
    r"\s+dvc config core\.autostage true|Use `dvc push` to send your updates to remote storage\.)$"
)
#: Extra seconds the Prefect task timeout leaves the stage's own time limit (which stops the processes).
_TIMEOUT_MARGIN_S = 60


def _keep_run_logs_at_info() -> None:
    """Store the run's own INFO logs (stage progress) even when PREFECT_LOGGING_LEVEL quiets Prefect.

    ``make demo`` sets PREFECT_LOGGING_LEVEL=WARNING to keep Prefect's internals off the console; the
    run and task loggers inherit it, and the runs stored no log at all. Only these two loggers change.
    """
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)


def _shown(name: str) -> str:
    """A drop's name for logs and artifacts: only valid batch names (they are the batch ids anyway)."""
    from exact_ct.batches import BATCH_NAME

    return name if BATCH_NAME.match(name) else "(a folder with an invalid batch name)"


@task(name="resume-registrations", task_run_name="resume-registrations")
def resume(repo: str) -> list[str]:
    """Finish registrations a killed run left half done (journal in data/raw)."""
    from exact_ct.batches import resume_registrations

    finished = resume_registrations(Path(repo))
    if finished:
        get_run_logger().warning("finished interrupted registration(s): %s", ", ".join(finished))
    return finished


@task(name="triage-inbox", task_run_name="triage-inbox")
def triage(inbox: str, repo: str, settle_seconds: float) -> list[dict[str, Any]]:
    """Decide for every inbox entry: register, hold (still settling), set aside (named rule) or wait.

    Set-aside drops and entries (links, special files) are moved to ``<inbox>/_quarantine`` with a
    ``reasons.csv``; one bad drop never stops the others.
    """
    from exact_ct.batches import quarantine_entries, set_aside, triage_inbox

    logger = get_run_logger()
    rows = []
    for t in triage_inbox(Path(inbox), Path(repo), settle_seconds):
        name = _shown(t.drop.name)
        if t.action == "set_aside":
            set_aside(Path(inbox), t)
            logger.warning("drop %s set aside (rule %s)", name, t.rule)
        elif t.action == "hold":
            logger.info("drop %s held: written less than %g s ago", name, settle_seconds)
        elif t.action == "register" and t.rejected:
            quarantine_entries(Path(inbox), t.drop, t.rejected)
            rules = sorted({r.rule for r in t.rejected})
            logger.warning("drop %s: %d entries set aside (rule %s)", name, len(t.rejected), ", ".join(rules))
        rows.append(
            {
                "drop": name,
                "path": str(t.drop) if t.action == "register" else "",
                "action": t.action,
                "rule": t.rule,
                "entries_set_aside": len(t.rejected),
            }
        )
    return rows


@task(
    name="register-batch",
    task_run_name=lambda: f"register-batch-{Path(str(task_run.parameters['drop'])).name}",
    retries=2,
    retry_delay_seconds=5,
)
def register_batch(drop: str, repo: str) -> str:
    """Move one drop into data/raw/<batch> (batch = the drop's folder name) and track it with DVC."""
    from exact_ct.batches import register_drop

    batch = Path(drop).name
    register_drop(Path(drop), batch, Path(repo))  # a retry resumes from the registration journal
    return batch


@task(name="dvc-repro", task_run_name="dvc-repro-{stage}")
def repro_stage(
    stage: str,
    repo: str,
    timeout_seconds: float | None = None,
    progress: UUID | None = None,
    position: tuple[int, int] = (0, 1),
    epochs: int | None = None,
) -> dict[str, Any]:
    """Run one DVC stage group; DVC reruns only stale instances (no Prefect caching on top).

    Every line the stage writes (epochs, study counts, DVC's own lines) goes into this task run's log as
    it is written; the run's progress artifact ``progress`` moves with each finished epoch of ``train``.
    ``position`` is (index of this stage group, number of stage groups) in the run.
    """
    logger = get_run_logger()
    index, total = position

    def on_line(line: str) -> None:
        if _DVC_HINTS.match(line):
            return
        logger.info("%s", line[:1000])
        m = _EPOCH.search(line)
        if progress is not None and epochs and m:
            done = min(int(m.group(1)) + 1, epochs) / epochs
            update_progress_artifact(progress, round(100.0 * (index + done) / total, 1))

    result = dvc_tasks.repro(stage, Path(repo), on_line=on_line, timeout=timeout_seconds)
    logger.info(
        "%s: ran %d, skipped %d in %.1f s", stage, len(result.ran), len(result.skipped), result.seconds
    )
    if progress is not None:
        update_progress_artifact(progress, round(100.0 * (index + 1) / total, 1))
    return result.as_dict()


@task(name="dvc-push", task_run_name="dvc-push", retries=3, retry_delay_seconds=10, timeout_seconds=3600)
def push_outputs(repo: str) -> None:
    dvc_tasks.push(Path(repo))


@task(name="git-commit", task_run_name="git-commit", timeout_seconds=600)
def record_in_git(repo: str, message: str, tag: str | None, tag_message: str) -> dict[str, str | None]:
    """Commit dvc.lock, params.yaml, .dvc files and metrics (only those) and tag a published version."""
    logger = get_run_logger()
    if not git_tasks.is_checkout(Path(repo)):
        logger.warning("%s is not the top of a git checkout: the run is not recorded in git", repo)
        return {"commit": None, "tag": None}
    record = git_tasks.record_run(Path(repo), message, tag, tag_message)
    if tag and record.tag is None:
        logger.warning("tag %s exists already; left where it is", tag)
    logger.info(
        "git: commit %s%s", record.commit or "(nothing changed)", f", tag {record.tag}" if record.tag else ""
    )
    return record.as_dict()


def commit_message(
    new_batches: list[str], results: list[dict[str, Any]], decision: dict[str, Any] | None
) -> str:
    """``retrain: batches b1, b2; gate rejected: <why>`` and a body listing what ran."""
    outcome, why = gate_headline(decision)
    batches = f"batches {', '.join(new_batches)}" if new_batches else "no new batch (stale stages rerun)"
    version = (decision or {}).get("version")
    gate = f"gate {outcome}" + (f" as {version}" if outcome == "promoted" and version else "")
    subject = f"retrain: {batches}; {gate}"
    body = [why] if why else []
    ran = [f"{r['stage']}: ran {', '.join(r['ran'])}" for r in results if r["ran"]]
    return "\n\n".join([subject, *body, "\n".join(ran)]).strip() + "\n"


def _tag_run(tags: list[str]) -> None:
    """Add ``tags`` to the running flow run (searchable in the UI and by automations)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run.id))
            client.update_flow_run(run.id, tags=sorted({*run.tags, *tags}))
    except Exception as e:  # a tag is a convenience: never fail a finished run over it
        get_run_logger().warning("could not tag the run (%s)", type(e).__name__)


def _link_artifacts(repo: Path, decision: dict[str, Any] | None) -> None:
    """Links to the HTML evaluation report and, for a published version, its model card."""
    report = repo / "reports" / "evaluate" / "index.html"
    if report.is_file():
        create_link_artifact(
            key="evaluation-report",
            link=report.resolve().as_uri(),
            link_text="evaluation report (HTML)",
            description="Metrics, curves, overlays and grounded reports of the candidate",
        )
    version = (decision or {}).get("version")
    card = repo / "models" / "registry" / str(version) / "model_card.md" if version else None
    if card is not None and card.is_file():
        create_link_artifact(
            key="model-card",
            link=card.resolve().as_uri(),
            link_text=f"model card {version}",
            description="Model card of the version the gate points at",
        )


def _on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Record which stage failed and why, as an artifact the data engineer sees on the run page."""
    message = str(state.message or "")
    try:
        create_markdown_artifact(
            key="retrain-failure",
            markdown=f"# retrain failed\n\n{message}\n\nThe champion model was left in place.\n",
            description="Which stage failed and why",
        )
    except Exception:  # the hook must never mask the original failure
        pass


def _intake_markdown(intake: list[dict[str, Any]], resumed: list[str]) -> str:
    lines = ["# retrain: inbox", ""]
    if resumed:
        lines += [f"Interrupted registrations finished: {', '.join(resumed)}", ""]
    if not intake:
        return "\n".join([*lines, "The inbox is empty.", ""])
    lines += ["| drop | action | rule | entries set aside |", "|---|---|---|---|"]
    lines += [f"| {r['drop']} | {r['action']} | {r['rule']} | {r['entries_set_aside']} |" for r in intake]
    return "\n".join(
        [*lines, "", "Set-aside drops and entries: `<inbox>/_quarantine/<drop>/reasons.csv`.", ""]
    )


@flow(name="retrain", on_failure=[_on_failure], log_prints=False)
def retrain(
    repo: str = ".",
    inbox: str | None = None,
    push: bool = True,
    settle_seconds: float | None = None,
    commit: bool | None = None,
) -> dict[str, Any]:
    """Register new complete drops, rerun what DVC says is stale, publish, record in git, and report.

    The whole run holds the workspace lock (``exact_ct.batches.workspace_lock``): one writer per
    checkout, released by the kernel when the process ends, kill -9 included. A run that reran stages
    ends in a git commit (``commit``, default ``retrain.git_commit``) and, when a version was published,
    a tag ``<retrain.artifact>@v<version>``. A rejected candidate ends the run in state ``Rejected`` (a
    kind of Completed) and a promoted one in ``Promoted``; the run is tagged ``gate:<outcome>`` too.
    Returns a dict: ``status``, ``batches``, ``stages``, ``summary``, ``git``, ``held``, ``set_aside``.
    """
    from exact_ct.batches import workspace_lock

    _keep_run_logs_at_info()
    logger = get_run_logger()
    repo_path = Path(repo).resolve()
    inbox_path = Path(inbox) if inbox else repo_path / "data" / "inbox"
    cfg = retrain_config(repo_path)
    settle = cfg.settle_seconds if settle_seconds is None else float(settle_seconds)
    with workspace_lock(repo_path, timeout=cfg.lock_timeout_seconds):
        resumed = resume(str(repo_path))
        intake = triage(str(inbox_path), str(repo_path), settle)
        create_markdown_artifact(
            key="retrain-intake",
            markdown=_intake_markdown(intake, resumed),
            description="What happened to each drop",
        )
        new_batches = resumed + [
            register_batch(r["path"], str(repo_path)) for r in intake if r["action"] == "register"
        ]
        held = [r["drop"] for r in intake if r["action"] == "hold"]
        set_aside = [r["drop"] for r in intake if r["action"] == "set_aside"]
        skip = set(cfg.skip_stages)
        stages = [s for s in dvc_tasks.pipeline_stages(repo_path) if s not in skip]
        if not new_batches and dvc_tasks.is_up_to_date(repo_path, stages):
            logger.info("nothing new: no complete drop in the inbox and the pipeline is up to date")
            create_markdown_artifact(
                key="retrain-summary",
                markdown="# Gate: NOT RUN\n\nNothing new: no complete drop in the inbox and every stage is up to date.\n",
                description="Gate decision first, then batches, counts, stages, drift",
            )
            return {
                "status": "nothing new",
                "batches": [],
                "stages": [],
                "held": held,
                "set_aside": set_aside,
            }

        progress = cast(
            UUID,
            create_progress_artifact(
                0.0,
                key="retrain-progress",
                description="Share of the run's stage groups done (train: by epoch)",
            ),
        )
        epochs = train_epochs(repo_path)
        repro = repro_stage.with_options(timeout_seconds=cfg.stage_timeout_seconds + _TIMEOUT_MARGIN_S)
        results = [
            repro(
                stage,
                str(repo_path),
                timeout_seconds=cfg.stage_timeout_seconds,
                progress=progress,
                position=(i, len(stages)),
                epochs=epochs if stage == "train" else None,
            )
            for i, stage in enumerate(stages)
        ]
        if push:
            push_outputs(str(repo_path))
        summary = _collect(repo_path, new_batches, results)
        decision = summary.get("publish")
        outcome, why = gate_headline(decision)
        version = (decision or {}).get("version")
        git: dict[str, str | None] = {"commit": None, "tag": None}
        if cfg.git_commit if commit is None else commit:
            tag = f"{cfg.artifact}@v{version}" if outcome == "promoted" and version else None
            git = record_in_git(
                str(repo_path),
                commit_message(new_batches, results, decision),
                tag,
                f"{cfg.artifact} {version}: {why}",
            )
        summary["git"] = git

    create_markdown_artifact(
        key="retrain-summary",
        markdown=batch_summary_markdown(summary),
        description="Gate decision first, then batches, counts, stages, drift",
    )
    create_table_artifact(
        key="retrain-stages", table=stage_table(results), description="Stages run or skipped"
    )
    _link_artifacts(repo_path, decision)
    _tag_run([f"gate:{outcome.replace(' ', '-')}"])
    logger.info(
        "retrain done: %d new batch(es), %d stage group(s); gate %s", len(new_batches), len(results), outcome
    )
    result = {
        "status": "ran",
        "batches": new_batches,
        "stages": results,
        "summary": summary,
        "git": git,
        "held": held,
        "set_aside": set_aside,
    }
    if outcome in ("promoted", "rejected"):
        # Prefect ends the run in this named state and hands the caller its data (the dict), not the state.
        return cast(dict[str, Any], Completed(name=outcome.capitalize(), message=why[:500], data=result))
    return result


def _collect(repo: Path, new_batches: list[str], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts-only summary from the stages' JSON reports (never report text or identifiers)."""
    reports = repo / "reports"
    per_batch: dict[str, dict[str, Any]] = {}
    for batch in new_batches:
        per_batch[batch] = {}
        for stage in ("ingest", "parse_reports", "pseudo_masks"):
            path = reports / stage / f"{batch}.json"
            if path.exists():
                per_batch[batch][stage] = json.loads(path.read_text(encoding="utf-8"))
    extra = {}
    for key, name in (("headline", "publish/metrics.json"), ("publish", "publish/decision.json")):
        path = reports / name
        if path.exists():
            extra[key] = json.loads(path.read_text(encoding="utf-8"))
    return {
        "new_batches": new_batches,
        "stages": results,
        "per_batch": per_batch,
        "drift": label_drift(repo, new_batches),
        **extra,
    }
