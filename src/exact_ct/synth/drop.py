"""Write a synthetic hospital drop (DICOM + reports.csv + _COMPLETE) and its ground truth, apart."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from exact_ct.io import save_nifti, write_bytes_atomic, write_csv_atomic, write_json_atomic
from exact_ct.logs import get_logger
from exact_ct.schema import ABNORMALITIES, slug
from exact_ct.synth.geometry import check_profile

log = get_logger(__name__)
SYNTH_VERSION = 1


@dataclass(frozen=True)
class DropConfig:
    """Everything that fixes the bytes of a drop (params.yaml section ``synth`` plus the CLI)."""

    studies: int
    seed: int
    batch: str = ""
    profile: str = "demo"
    label_noise: float = 0.05
    hedge_share: float = 0.08


def _one(index: int, cfg: DropConfig, drop: Path, truth: Path) -> dict[str, Any]:
    """Render, write DICOM and truth volumes of one study; return its small table rows."""
    from exact_ct.synth.dicom import write_study_dicom
    from exact_ct.synth.study import render_study

    s = render_study(
        index,
        cfg.seed,
        cfg.profile,
        batch=cfg.batch,
        label_noise=cfg.label_noise,
        hedge_share=cfg.hedge_share,
    )
    files = write_study_dicom(s, drop / "dicom")
    acc = s.accession_number
    save_nifti(s.organs, s.affine, truth / "organs" / f"{acc}.nii.gz", np.uint8)
    for name, mask in s.lesions.items():
        save_nifti(mask, s.affine, truth / "lesions" / acc / f"{slug(name)}.nii.gz", np.uint8)
    return {
        "report": {
            "accession_number": acc,
            "patient_id": s.patient_id,
            "findings": s.findings,
            "impression": s.impression,
        },
        "labels": {
            "accession_number": acc,
            "patient_id": s.patient_id,
            **{k: s.labels[k] for k in ABNORMALITIES},
        },
        "reported": {
            "accession_number": acc,
            "patient_id": s.patient_id,
            **{k: s.reported_labels[k] for k in ABNORMALITIES},
        },
        "noise": [{"accession_number": acc, "abnormality": n, "kind": kind} for n, kind in s.noise_events],
        "study": {
            "accession_number": acc,
            "patient_id": s.patient_id,
            "index": index,
            "study_instance_uid": s.uid("study"),
            "diagnostic_series_uid": s.uid("series", "2"),
            "shape_xyz": "x".join(str(v) for v in s.hu.shape),
            "spacing_xyz_mm": "x".join(f"{v:g}" for v in s.grid.spacing),
            "contrast": int(s.contrast),
            "scout": int(s.plan.scout),
            "thick_recon": int(bool(s.plan.thick_factor)),
            "layout": s.plan.layout,
            "dicom_files": len(files),
            "age": s.age,
            "sex": s.sex,
        },
    }


def write_drop(
    out: str | Path, cfg: DropConfig, *, workers: int = 1, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Write ``out/drop`` (what a hospital delivers) and ``out/truth`` (what only the synthesiser knows).

    ``out/drop/_COMPLETE`` is written last, so a reader never sees a half-written drop as complete.
    Returns a small summary (counts only, no identifiers).
    """
    import pandas as pd

    from exact_ct.parallel import map_ordered

    check_profile(cfg.profile)
    if cfg.studies < 1:
        raise ValueError(f"--studies must be >= 1 (got {cfg.studies})")
    out = Path(out)
    drop, truth = out / "drop", out / "truth"
    for d in (drop, truth):
        if d.exists() and any(d.iterdir()):
            if not overwrite:
                raise ValueError(f"{d} is not empty; choose another --out or pass --overwrite")
            shutil.rmtree(d)
    drop.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    fn = partial(_one, cfg=cfg, drop=drop, truth=truth)
    for row in map_ordered(fn, range(cfg.studies), workers=workers, desc="synth", progress=progress):
        rows.append(row)

    def frame(key: str, columns: list[str]) -> pd.DataFrame:
        return pd.DataFrame([r[key] for r in rows], columns=columns)

    label_cols = ["accession_number", "patient_id", *ABNORMALITIES]
    labels = frame("labels", label_cols)
    reported = frame("reported", label_cols)
    for col in ABNORMALITIES:
        reported[col] = reported[col].astype("Int64")
    noise = pd.DataFrame(
        [n for r in rows for n in r["noise"]], columns=["accession_number", "abnormality", "kind"]
    )
    write_csv_atomic(truth / "labels.csv", labels)
    write_csv_atomic(truth / "reported_labels.csv", reported)
    write_csv_atomic(truth / "label_noise.csv", noise)
    write_csv_atomic(truth / "studies.csv", pd.DataFrame([r["study"] for r in rows]))
    summary = {
        "synth_version": SYNTH_VERSION,
        "seed": cfg.seed,
        "batch": cfg.batch,
        "profile": cfg.profile,
        "label_noise": cfg.label_noise,
        "hedge_share": cfg.hedge_share,
        "studies": cfg.studies,
        "patients": int(labels["patient_id"].nunique()),
        "dicom_files": int(sum(r["study"]["dicom_files"] for r in rows)),
        "prevalence": {k: round(float(labels[k].mean()), 4) for k in ABNORMALITIES},
        "omitted_findings": int((noise["kind"] == "omitted").sum()) if len(noise) else 0,
        "hedged_findings": int((noise["kind"] == "hedged").sum()) if len(noise) else 0,
        "grid": "canonical RAS+ grid of the diagnostic (thin, lung kernel) series",
    }
    write_json_atomic(truth / "meta.json", summary)
    write_csv_atomic(
        drop / "reports.csv", frame("report", ["accession_number", "patient_id", "findings", "impression"])
    )
    write_bytes_atomic(drop / "_COMPLETE", b"")
    log.info(
        "synth: %d studies, %d DICOM files, %d patients",
        cfg.studies,
        summary["dicom_files"],
        summary["patients"],
    )
    return summary


@dataclass(frozen=True)
class SynthConfig:
    """params.yaml section ``synth``."""

    profile: str = "demo"
    label_noise: float = 0.05
    hedge_share: float = 0.08
