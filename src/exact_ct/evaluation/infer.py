"""`exact infer` as a library function: one study (DICOM folder or NIfTI) through ingest QC, pseudo masks,
the model package, grounded report and overlay.

The study goes through exactly the ingest code a batch goes through (series selection, geometry and
content QC, RAS+ int16 HU), via a temporary one-study drop made of symbolic links (inputs are never
modified or copied). Pseudo masks are computed with the intensity backend as a QC reference for the
predicted organs (their Dice is reported), not as model input.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class StudyRejected(RuntimeError):
    """Ingest QC quarantined the study; the message names the rule and the reason."""


@dataclass(frozen=True)
class InferResult:
    out_dir: Path
    probabilities: dict[str, float]
    positives: tuple[str, ...]
    seconds: float
    #: seconds per step (ingest, pseudo_masks, to_model_grid, network, to_canonical, organ_dice,
    #: report, write); for benchmarks and logs only, never written to the outputs (determinism).
    timings: dict[str, float] = field(default_factory=dict)
    #: the ``dicom`` section of probabilities.json (None when no DICOM output was asked for or possible)
    dicom: dict[str, Any] | None = None


def _place(src: Path, dest: Path) -> None:
    """A hard link to ``src`` at ``dest`` (a copy across file systems): ingest reads regular files only,
    never symbolic links, and never modifies its inputs."""
    try:
        os.link(src.resolve(), dest)
    except OSError:
        shutil.copyfile(src.resolve(), dest)


def _link_tree(study: Path, drop: Path) -> None:
    if study.is_file():
        name = study.name if study.name.lower().endswith((".nii", ".nii.gz")) else None
        if name is None:
            raise ValueError(f"{study}: expected a DICOM folder or a .nii/.nii.gz file")
        (drop / "nifti").mkdir(parents=True)
        _place(study, drop / "nifti" / name)
        return
    if not study.is_dir():
        raise FileNotFoundError(f"{study}: no such file or folder")
    files = sorted(p for p in study.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"{study}: folder holds no files")
    for p in files:
        dest = drop / "dicom" / p.relative_to(study)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _place(p, dest)


def ingest_one(study: Path, work: Path, cfg: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Canonical (hu, affine, manifest row) of one study; raises StudyRejected with ingest's reason."""
    import pandas as pd

    from exact_ct.ingest import ingest_drop
    from exact_ct.io import load_canonical

    drop = work / "drop"
    _link_tree(Path(study), drop)
    out = work / "ingest"
    summary = ingest_drop(drop, out, cfg, progress=False)
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    if summary["studies_used"] == 0 or manifest.empty:
        q = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
        reasons = sorted({f"{r.rule}: {r.message}" for r in q.itertuples(index=False)}) or [
            "no CT series found"
        ]
        raise StudyRejected(f"{study}: rejected by ingest QC ({'; '.join(reasons[:3])})")
    if len(manifest) > 1:
        raise StudyRejected(f"{study}: holds {len(manifest)} studies; pass one study per call")
    row = manifest.iloc[0].to_dict()
    hu, affine = load_canonical(out / row["volume"])
    return np.asarray(hu), affine, row


def run_infer(
    study: Path,
    model_dir: Path,
    out_dir: Path,
    *,
    ingest_cfg: Any = None,
    masks_params: Any = None,
    pseudo_masks: bool = True,
    device: str = "cpu",
    package: Any = None,
    dicom: bool | None = None,
    dicom_jpeg2000: bool = False,
) -> InferResult:
    """Write probabilities.json, organs.nii.gz, anomaly_maps.nii.gz, report.md and overlay.png to ``out_dir``.

    Args:
        package: an already loaded ModelPackage (benchmarks); else loaded from ``model_dir``.
        dicom: also write ``dicom/`` (organ and finding SEGs on the source slices, the report as an SR;
            exact_ct.evaluation.dicom_export). None: when the study is a DICOM series. True on a NIfTI
            study raises ValueError.
        dicom_jpeg2000: store the SEG frames JPEG 2000 lossless (smaller; not every SEG reader decodes it).
    """
    from exact_ct.evaluation import explain, grounded
    from exact_ct.ingest import IngestConfig
    from exact_ct.io import spacing_from_affine, write_json_atomic, write_text_atomic
    from exact_ct.model.inference import StepClock, infer_volume
    from exact_ct.model.package import load_package
    from exact_ct.schema import ABNORMALITIES

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(out_dir)
    pkg = package if package is not None else load_package(model_dir, device)
    # One study: no report row is expected and no process pool is worth starting.
    cfg = replace(ingest_cfg or IngestConfig(), require_report=False, workers=1)
    with tempfile.TemporaryDirectory(prefix="exact-infer-") as tmp:
        clock = StepClock(timings)
        hu, affine, row = ingest_one(Path(study), Path(tmp), cfg)
        is_dicom = row.get("source") == "dicom"
        if dicom and not is_dicom:
            raise ValueError(f"{study}: DICOM export needs a DICOM series as input, not a NIfTI file")
        source = None
        dicom_summary: dict[str, Any] | None = None
        if is_dicom and dicom is not False:
            from exact_ct.evaluation.dicom_export import ExportSkipped, find_source_series

            try:  # headers are read now: the drop of links goes away with the temporary folder
                source = find_source_series(Path(tmp) / "drop", str(row["series_uid_hash"]), cfg)
            except ExportSkipped as e:
                dicom_summary = {"written": False, "reason": str(e)}
        clock.lap("ingest")
        qc: dict[str, Any] = {"ingest_flags": [f for f in str(row.get("qc_flags", "")).split(";") if f]}
        pseudo = None
        if pseudo_masks:
            from exact_ct.masks import PseudoMasksConfig
            from exact_ct.masks.intensity import segment
            from exact_ct.masks.qc import check, organ_volumes_ml

            params = masks_params or PseudoMasksConfig()
            # A QC reference for organs the model predicts at its own grid spacing needs no finer grid.
            grid_mm = max(params.intensity.grid_mm, min(pkg.plan.spacing_xyz_mm))
            pseudo = segment(hu, affine, replace(params.intensity, grid_mm=grid_mm))
            qc["pseudo_mask_issues"] = [
                f"{i.rule}: {i.message}" for i in check(organ_volumes_ml(pseudo, affine), params.qc)
            ]
            clock.lap("pseudo_masks")
    probs, organs, maps = infer_volume(hu, affine, pkg, device, timings=timings)
    clock = StepClock(timings)
    if pseudo is not None:
        from exact_ct.evaluation.localization import organ_dice

        d = organ_dice(organs, pseudo)
        qc["organ_dice_vs_pseudo_masks"] = d
        defined = [v for v in d.values() if v is not None]
        qc["mean_organ_dice_vs_pseudo_masks"] = float(np.mean(defined)) if defined else None
        clock.lap("organ_dice")
    conf = pkg.confine(maps, organs, spacing_from_affine(affine))
    thresholds = {n: float(pkg.thresholds.get(n, 0.5)) for n in ABNORMALITIES}
    report = grounded.build_report(probs, thresholds, conf, organs, affine)
    clock.lap("report")
    out_dir.mkdir(parents=True, exist_ok=True)
    explain.save_maps(out_dir, conf, organs, affine)
    explain.montage(out_dir / "overlay.png", hu, organs, conf, affine, report.findings, probs)
    write_text_atomic(out_dir / "report.md", grounded.to_markdown(report, "Grounded report", pkg.version))
    if source is not None:
        from exact_ct.evaluation.dicom_export import ExportSkipped, export_dicom

        try:
            dicom_summary = {
                "written": True,
                **export_dicom(
                    out_dir,
                    source,
                    organs,
                    conf,
                    affine,
                    thresholds,
                    report,
                    pkg.version,
                    jpeg2000=dicom_jpeg2000,
                ),
            }
        except ExportSkipped as e:
            dicom_summary = {"written": False, "reason": str(e)}
        clock.lap("dicom")
    if dicom_summary is not None and not dicom_summary["written"]:
        log.warning("infer: no DICOM output: %s", dicom_summary["reason"])
    positives = tuple(f.abnormality for f in report.findings)
    write_json_atomic(
        out_dir / "probabilities.json",
        {
            "model_version": pkg.version,
            "data_version": pkg.data_version,
            "probabilities": {n: round(float(probs[n]), 6) for n in ABNORMALITIES},
            "thresholds": thresholds,
            "positive": list(positives),
            "stated_absent": list(report.absent),
            "findings": [f.to_json() for f in report.findings],
            "volume": {"shape_xyz": list(hu.shape), "spacing_xyz_mm": list(spacing_from_affine(affine))},
            "anomaly_maps": {
                "file": "anomaly_maps.nii.gz",
                "channels": list(ABNORMALITIES),
                "confined_to_organs": bool(pkg.pooling.confine),
            },
            "qc": qc,
            **({"dicom": dicom_summary} if dicom_summary is not None else {}),
        },
    )
    clock.lap("write")
    seconds = time.perf_counter() - t0
    log.info("infer: %d positive finding(s) in %.1f s", len(positives), seconds)
    log.debug("infer steps: %s", ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return InferResult(
        out_dir, {n: float(probs[n]) for n in ABNORMALITIES}, positives, seconds, timings, dicom_summary
    )
