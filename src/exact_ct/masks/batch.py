"""Pseudo masks for one ingested batch: a mask per study, QC table and quarantine list."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exact_ct.masks.config import PseudoMasksConfig
from exact_ct.schema import ORGANS, organ_labels

QC_COLUMNS = ["study_id", "backend", "passed", "rules"] + [f"{ORGANS[i]}_ml" for i in ORGANS if i != 0]
QUARANTINE_COLUMNS = ["study_id", "path", "rule", "message"]


@dataclass(frozen=True)
class _Job:
    study_id: str
    ct_path: Path
    mask_path: Path
    params: PseudoMasksConfig


def _one(job: _Job) -> dict[str, Any]:
    """Segment, QC and (only if it passes) save one study's mask; never raises for a bad study."""
    from exact_ct.io import load_canonical, save_label_map
    from exact_ct.masks import make_mask
    from exact_ct.masks.qc import check, organ_volumes_ml

    row: dict[str, Any] = {"study_id": job.study_id, "backend": job.params.backend}
    tmp = job.mask_path.with_name(f".{job.mask_path.name}.qc.nii.gz")
    try:
        labels = make_mask(job.ct_path, tmp, job.params)
        _, affine = load_canonical(tmp)
    except Exception as e:  # a bad study is quarantined with its reason; the batch goes on
        tmp.unlink(missing_ok=True)
        return {**row, "passed": False, "issues": [("segmentation_error", f"{type(e).__name__}: {e}")]}
    volumes = organ_volumes_ml(labels, affine)
    issues = check(volumes, job.params.qc, labels)
    if not issues:
        save_label_map(labels, affine, job.mask_path, organ_labels())
    tmp.unlink(missing_ok=True)
    return {
        **row,
        **{f"{k}_ml": v for k, v in volumes.items()},
        "passed": not issues,
        "issues": [(i.rule, i.message) for i in issues],
    }


def run_batch(
    in_dir: str | Path, out_dir: str | Path, params: PseudoMasksConfig, *, progress: bool = False
) -> dict[str, Any]:
    """Masks for every study of ``in_dir/manifest.csv``; fully rewrites ``out_dir``. Returns counts."""
    import pandas as pd

    from exact_ct.io import write_csv_atomic
    from exact_ct.parallel import map_ordered

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    manifest_path = in_dir / "manifest.csv"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path}: ingest manifest not found")
    manifest = pd.read_csv(manifest_path, dtype=str)
    for col in ("study_id", "volume"):
        if col not in manifest.columns:
            raise ValueError(f"{manifest_path}: column {col!r} missing")
    masks_dir = out_dir / "masks"
    if masks_dir.exists():
        shutil.rmtree(masks_dir)  # DVC outs are rewritten in full: no stale masks from an earlier run
    masks_dir.mkdir(parents=True)
    jobs = [
        _Job(r.study_id, in_dir / r.volume, masks_dir / f"{r.study_id}.nii.gz", params)
        for r in manifest.itertuples(index=False)
    ]
    qc_rows, quarantine = [], []
    for job, res in zip(
        jobs,
        map_ordered(_one, jobs, workers=params.workers, desc="pseudo_masks", progress=progress),
        strict=True,
    ):
        rel = str(job.ct_path.relative_to(in_dir)) if job.ct_path.is_relative_to(in_dir) else str(job.ct_path)
        for rule, message in res["issues"]:
            quarantine.append({"study_id": job.study_id, "path": rel, "rule": rule, "message": message})
        qc_rows.append({**res, "rules": ";".join(r for r, _ in res["issues"])})
    qc = pd.DataFrame(qc_rows).reindex(columns=QC_COLUMNS)
    write_csv_atomic(out_dir / "qc.csv", qc)
    write_csv_atomic(out_dir / "quarantine.csv", pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS))
    passed = int(qc["passed"].sum()) if len(qc) else 0
    return {
        "backend": params.backend,
        "studies": len(jobs),
        "masks": passed,
        "quarantined": len(jobs) - passed,
        "quarantine_rules": dict(sorted(pd.Series([q["rule"] for q in quarantine]).value_counts().items()))
        if quarantine
        else {},
    }
