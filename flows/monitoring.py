"""Counts-only monitoring for data engineers: label drift between batches, stage tables, run summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from flows.config import retrain_config


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
    threshold = retrain_config(repo).drift_threshold
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


def _scalars(obj: Any) -> list[tuple[str, Any]]:
    """Top-level numeric entries of a stage summary (nested breakdowns stay in the stage's JSON)."""
    if not isinstance(obj, dict):
        return []
    return [
        (k, v)
        for k, v in obj.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not str(k).startswith("_")
    ]


def _num(v: Any, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{float(v):+.4f}" if signed else f"{float(v):.4f}"


def gate_headline(decision: dict[str, Any] | None) -> tuple[str, str]:
    """(outcome, why) of the publish gate in words: ``promoted``/``rejected``/``unchanged``/``not run``."""
    if not decision:
        return "not run", "the pipeline has no publish stage or it did not run"
    status = str(decision.get("status") or ("promoted" if decision.get("promoted") else "rejected"))
    outcome = {"first": "promoted", "promoted": "promoted"}.get(status, status)
    return outcome, str(decision.get("reason", ""))


def gate_markdown(decision: dict[str, Any] | None, git: dict[str, Any] | None = None) -> list[str]:
    """The gate section that opens the run summary: outcome and why, the macro comparison, what changed."""
    outcome, why = gate_headline(decision)
    lines = [f"# Gate: {outcome.upper()}", ""]
    if not decision:
        return [*lines, why.capitalize() + ".", ""]
    failures = list(decision.get("failures") or [])
    if outcome == "rejected" and failures:
        lines.append("Rejected because:")
        lines += [f"- {f}" for f in failures[:6]]
        if len(failures) > 6:
            lines.append(f"- ... and {len(failures) - 6} more (reports/publish/decision.json)")
    else:
        lines.append(why)
    lines.append("")
    macro = (decision.get("differences") or {}).get("macro_auroc") or {}
    champion = decision.get("champion")
    if macro:
        lines += [
            "| macro AUROC (test) | candidate | champion"
            + (f" {champion}" if champion else "")
            + " | difference |",
            "|---|---|---|---|",
            f"| | {_num(macro.get('candidate'))} | {_num(macro.get('champion'))} | {_num(macro.get('delta'), signed=True)} |",
            "",
        ]
    version = decision.get("version")
    if outcome == "promoted" and version:
        lines.append(f"Published as version {version} ({decision.get('bump', '')}); it is the champion now.")
    elif champion:
        lines.append(f"The champion stays version {champion}.")
    else:
        lines.append("No model is published yet.")
    if git and git.get("commit"):
        tag = f", tag `{git['tag']}`" if git.get("tag") else ""
        lines.append(f"Recorded in git commit `{str(git['commit'])[:12]}`{tag}.")
    return [*lines, ""]


def batch_summary_markdown(summary: dict[str, Any]) -> str:
    """The run's markdown artifact: the gate decision first, then batches, counts, stages and drift."""
    lines = gate_markdown(summary.get("publish"), summary.get("git"))
    new = summary.get("new_batches") or []
    lines += ["## Batches", "", f"New: {', '.join(new) if new else 'none (stale stages rerun)'}", ""]
    counts = [
        (batch, stage, _scalars(report))
        for batch, stages in (summary.get("per_batch") or {}).items()
        for stage, report in stages.items()
    ]
    if counts:
        lines += ["| batch | stage | counts |", "|---|---|---|"]
        lines += [
            f"| {b} | {s} | {', '.join(f'{k} {v}' for k, v in items) or '-'} |" for b, s, items in counts
        ]
        lines += ["", "Every count of a stage: `reports/<stage>/<batch>.json`.", ""]
    lines += ["## Stages", "", "| stage | ran | skipped | seconds |", "|---|---|---|---|"]
    for r in summary.get("stages", []):
        lines.append(f"| {r['stage']} | {len(r['ran'])} | {len(r['skipped'])} | {r['seconds']} |")
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
    return "\n".join(lines) + "\n"
