"""Prefect flow `retrain`: register complete drops from the inbox, run the DVC stages, report, push."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from flows import dvc_tasks
from flows.monitoring import batch_summary_markdown, label_drift, stage_table

#: One DVC writer per workspace: every task that runs DVC holds this global concurrency slot.
DVC_LIMIT = "exact-dvc-workspace"


def _ensure_dvc_limit() -> None:
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(DVC_LIMIT, limit=1)


@task(name="find-drops")
def find_drops(inbox: str) -> list[str]:
    from exact_ct.batches import check_drop, find_complete_drops

    drops = []
    for drop in find_complete_drops(Path(inbox)):
        check = check_drop(drop)
        if check.problems:
            raise ValueError("; ".join(check.problems))
        drops.append(str(drop))
    return drops


@task(name="register-batch", retries=2, retry_delay_seconds=5)
def register_batch(drop: str, repo: str) -> str:
    """Move one drop into data/raw/<batch> (batch = the drop's folder name) and track it with DVC."""
    from exact_ct.batches import register_drop

    batch = Path(drop).name
    with concurrency(DVC_LIMIT, occupy=1, strict=True):
        register_drop(Path(drop), batch, Path(repo))
    return batch


@task(name="dvc-repro")
def repro_stage(stage: str, repo: str) -> dict[str, Any]:
    """Run one DVC stage group; DVC reruns only stale instances (no Prefect caching on top)."""
    logger = get_run_logger()
    with concurrency(DVC_LIMIT, occupy=1, strict=True):
        result = dvc_tasks.repro(stage, Path(repo))
    logger.info(
        "%s: ran %d, skipped %d in %.1f s", stage, len(result.ran), len(result.skipped), result.seconds
    )
    return result.as_dict()


@task(name="dvc-push", retries=3, retry_delay_seconds=10)
def push_outputs(repo: str) -> None:
    with concurrency(DVC_LIMIT, occupy=1, strict=True):
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


@flow(name="retrain", on_failure=[_on_failure], log_prints=False)
def retrain(repo: str = ".", inbox: str | None = None, push: bool = True) -> dict[str, Any]:
    """Register new complete drops, rerun what DVC says is stale, publish, and report what happened."""
    logger = get_run_logger()
    repo_path = Path(repo).resolve()
    inbox_path = Path(inbox) if inbox else repo_path / "data" / "inbox"
    _ensure_dvc_limit()

    drops = find_drops(str(inbox_path))
    new_batches = [register_batch(d, str(repo_path)) for d in drops]
    skip = set(_retrain_params(repo_path).get("skip_stages") or [])
    stages = [s for s in dvc_tasks.pipeline_stages(repo_path) if s not in skip]
    if not new_batches and dvc_tasks.is_up_to_date(repo_path, stages):
        logger.info("nothing new: no complete drop in the inbox and the pipeline is up to date")
        create_markdown_artifact(key="retrain-summary", markdown="# retrain\n\nNothing new.\n")
        return {"status": "nothing new", "batches": [], "stages": []}

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
    return {"status": "ran", "batches": new_batches, "stages": results, "summary": summary}


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
