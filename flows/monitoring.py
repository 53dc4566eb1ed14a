"""Counts-only monitoring for data engineers: label drift between batches, stage tables, run summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

DEFAULT_DRIFT_THRESHOLD = 0.15


def _drift_threshold(repo: Path) -> float:
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8")) or {}
    return float((params.get("retrain") or {}).get("drift_threshold", DEFAULT_DRIFT_THRESHOLD))


def _prevalence(labels_csv: Path) -> pd.Series:
    frame = pd.read_csv(labels_csv)
    values = frame.drop(columns=[c for c in frame.columns if c in {"study_id", "patient_id"}])
    return (values == 1).mean(axis=0)


def label_drift(repo: Path, new_batches: list[str]) -> list[dict[str, Any]]:
    """Per-abnormality prevalence of each new batch against all earlier batches, with a drift flag.

    The flag is raised when the absolute prevalence difference exceeds ``retrain.drift_threshold``.
    """
    root = repo / "data" / "interim" / "parse_reports"
    if not root.is_dir():
        return []
    threshold = _drift_threshold(repo)
    all_batches = sorted(p.name for p in root.iterdir() if (p / "labels.csv").exists())
    rows: list[dict[str, Any]] = []
    for batch in new_batches:
        if batch not in all_batches:
            continue
        earlier = [b for b in all_batches if b != batch and b not in new_batches]
        new = _prevalence(root / batch / "labels.csv")
        if earlier:
            frames = [pd.read_csv(root / b / "labels.csv") for b in earlier]
            base_frame = pd.concat(frames, ignore_index=True)
            base = (
                base_frame.drop(columns=[c for c in base_frame.columns if c in {"study_id", "patient_id"}])
                == 1
            ).mean()
        else:
            base = None
        for name, value in new.items():
            ref = None if base is None else float(base.get(name, float("nan")))
            diff = None if ref is None else float(value) - ref
            rows.append(
                {
                    "batch": batch,
                    "abnormality": name,
                    "prevalence": round(float(value), 3),
                    "earlier": None if ref is None else round(ref, 3),
                    "difference": None if diff is None else round(diff, 3),
                    "drift": bool(diff is not None and abs(diff) > threshold),
                }
            )
    return rows


def stage_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "stage": r["stage"],
            "ran": len(r["ran"]),
            "skipped": len(r["skipped"]),
            "ran_instances": ", ".join(r["ran"]),
            "seconds": r["seconds"],
        }
        for r in results
    ]


def _flat_counts(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for key, value in sorted(obj.items()):
            items += _flat_counts(
                value, f"{prefix}{key}." if not isinstance(value, (int, float)) else f"{prefix}{key}"
            )
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        items.append((prefix.rstrip("."), obj))
    return items


def batch_summary_markdown(summary: dict[str, Any]) -> str:
    """The run's markdown artifact: batches, stages, counts by stage, drift flags, gate decision."""
    lines = ["# retrain", ""]
    new = summary.get("new_batches") or []
    lines.append(f"New batches: {', '.join(new) if new else 'none (pipeline was stale)'}")
    lines += ["", "## Stages", "", "| stage | ran | skipped | seconds |", "|---|---|---|---|"]
    for r in summary.get("stages", []):
        lines.append(f"| {r['stage']} | {len(r['ran'])} | {len(r['skipped'])} | {r['seconds']} |")
    for batch, stages in (summary.get("per_batch") or {}).items():
        lines += ["", f"## Batch {batch}", "", "| stage | count | value |", "|---|---|---|"]
        for stage, report in stages.items():
            for key, value in _flat_counts(report):
                lines.append(f"| {stage} | {key} | {value} |")
    drift = [d for d in summary.get("drift", []) if d["drift"]]
    lines += ["", "## Label drift", ""]
    if not summary.get("drift"):
        lines.append("No earlier batch to compare with.")
    elif drift:
        lines += ["| batch | abnormality | prevalence | earlier | difference |", "|---|---|---|---|---|"]
        lines += [
            f"| {d['batch']} | {d['abnormality']} | {d['prevalence']} | {d['earlier']} | {d['difference']} |"
            for d in drift
        ]
    else:
        lines.append("No abnormality's prevalence moved beyond the threshold.")
    if "evaluate" in summary:
        lines += ["", "## Metrics", ""] + [f"- {k}: {v}" for k, v in _flat_counts(summary["evaluate"])[:40]]
    if "publish" in summary:
        lines += ["", "## Gate", "", "```", str(summary["publish"])[:2000], "```"]
    return "\n".join(lines) + "\n"
