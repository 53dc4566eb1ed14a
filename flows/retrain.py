"""Prefect flow `retrain`: register complete drops from the inbox, run the DVC stages, report, push."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import dvc_tasks
from flows.monitoring import batch_summary_markdown, label_drift, stage_table

#: A drop whose newest write is younger than this is held for a later run (``retrain.settle_seconds``).
DEFAULT_SETTLE_SECONDS = 300.0
#: How long a run waits for the workspace lock another live run holds (``retrain.lock_timeout_seconds``).
DEFAULT_LOCK_TIMEOUT_SECONDS = 3600.0


def _shown(name: str) -> str:
    """A drop's name for logs and artifacts: only valid batch names (they are the batch ids anyway)."""
    from exact_ct.batches import BATCH_NAME

    return name if BATCH_NAME.match(name) else "(a folder with an invalid batch name)"


@task(name="resume-registrations")
def resume(repo: str) -> list[str]:
    """Finish registrations a killed run left half done (journal in data/raw)."""
    from exact_ct.batches import resume_registrations

    finished = resume_registrations(Path(repo))
    if finished:
        get_run_logger().warning("finished interrupted registration(s): %s", ", ".join(finished))
    return finished


@task(name="triage-inbox")
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


@task(name="register-batch", retries=2, retry_delay_seconds=5)
def register_batch(drop: str, repo: str) -> str:
    """Move one drop into data/raw/<batch> (batch = the drop's folder name) and track it with DVC."""
    from exact_ct.batches import register_drop

    batch = Path(drop).name
    register_drop(Path(drop), batch, Path(repo))  # a retry resumes from the registration journal
    return batch


@task(name="dvc-repro")
def repro_stage(stage: str, repo: str) -> dict[str, Any]:
    """Run one DVC stage group; DVC reruns only stale instances (no Prefect caching on top)."""
    logger = get_run_logger()
    result = dvc_tasks.repro(stage, Path(repo))
    logger.info(
        "%s: ran %d, skipped %d in %.1f s", stage, len(result.ran), len(result.skipped), result.seconds
    )
    return result.as_dict()


@task(name="dvc-push", retries=3, retry_delay_seconds=10)
def push_outputs(repo: str) -> None:
    dvc_tasks.push(Path(repo))


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
    repo: str = ".", inbox: str | None = None, push: bool = True, settle_seconds: float | None = None
) -> dict[str, Any]:
    """Register new complete drops, rerun what DVC says is stale, publish, and report what happened.

    The whole run holds the workspace lock (``exact_ct.batches.workspace_lock``): one writer per
    checkout, released by the kernel when the process ends, kill -9 included.
    """
    from exact_ct.batches import workspace_lock

    logger = get_run_logger()
    repo_path = Path(repo).resolve()
    inbox_path = Path(inbox) if inbox else repo_path / "data" / "inbox"
    params = _retrain_params(repo_path)
    settle = float(
        params.get("settle_seconds", DEFAULT_SETTLE_SECONDS) if settle_seconds is None else settle_seconds
    )
    lock_timeout = float(params.get("lock_timeout_seconds", DEFAULT_LOCK_TIMEOUT_SECONDS))
    with workspace_lock(repo_path, timeout=lock_timeout):
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
        skip = set(params.get("skip_stages") or [])
        stages = [s for s in dvc_tasks.pipeline_stages(repo_path) if s not in skip]
        if not new_batches and dvc_tasks.is_up_to_date(repo_path, stages):
            logger.info("nothing new: no complete drop in the inbox and the pipeline is up to date")
            create_markdown_artifact(key="retrain-summary", markdown="# retrain\n\nNothing new.\n")
            return {
                "status": "nothing new",
                "batches": [],
                "stages": [],
                "held": held,
                "set_aside": set_aside,
            }

        results = [repro_stage(stage, str(repo_path)) for stage in stages]
        if push:
            push_outputs(str(repo_path))

    summary = _collect(repo_path, new_batches, results)
    create_markdown_artifact(
        key="retrain-summary",
        markdown=batch_summary_markdown(summary),
        description="Batches, stages, counts, drift, gate",
    )
    create_table_artifact(
        key="retrain-stages", table=stage_table(results), description="Stages run or skipped"
    )
    logger.info("retrain done: %d new batch(es), %d stage group(s)", len(new_batches), len(results))
    return {
        "status": "ran",
        "batches": new_batches,
        "stages": results,
        "summary": summary,
        "held": held,
        "set_aside": set_aside,
    }


def _retrain_params(repo: Path) -> dict[str, Any]:
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8")) or {}
    return params.get("retrain") or {}


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
    for name in ("evaluate/metrics.json", "publish/decision.json"):
        path = reports / name
        if path.exists():
            extra[name.split("/")[0]] = json.loads(path.read_text(encoding="utf-8"))
    return {
        "new_batches": new_batches,
        "stages": results,
        "per_batch": per_batch,
        "drift": label_drift(repo, new_batches),
        **extra,
    }
