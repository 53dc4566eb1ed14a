"""The evaluate stage's library: predictions on val and test, metrics, explanations, grounded reports, HTML.

Layout written under ``out`` (DVC: metrics.json is the metric, plots/ the plots, the rest outs)::

    metrics.json                 diagnosis (with intervals), localization, organ Dice, grounded-report F1
    predictions.csv              study_id, split, 18 probabilities (val and test)
    plots/roc/<slug>.csv         fpr, tpr per abnormality (test split)
    plots/pr/<slug>.csv          recall, precision per abnormality
    figures/{roc,pr,calibration}.png
    studies/<study_id>/          anomaly_maps.nii.gz (x, y, z, 18) + organs.nii.gz on the canonical grid,
                                 montage.png, report.md, findings.json
    index.html                   self-contained report (images embedded)
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from exact_ct.dataset.build import load_index
from exact_ct.dataset.cache import load_npz
from exact_ct.dataset.grid import normalise, to_canonical
from exact_ct.dataset.labels import TRUTH_PREFIX, UNCERTAIN_PREFIX
from exact_ct.evaluation import explain, grounded, localization, metrics, plots
from exact_ct.evaluation.config import EvaluateConfig
from exact_ct.evaluation.html import write_html_report
from exact_ct.io import (
    load_canonical,
    spacing_from_affine,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from exact_ct.logs import progress
from exact_ct.schema import ABNORMALITIES

log = logging.getLogger(__name__)


@dataclass
class Reference:
    """Binary reference labels (n, 18) of one split and which cells count (uncertain ones do not)."""

    y: np.ndarray
    valid: np.ndarray


def resolve_label_source(index: pd.DataFrame, requested: str) -> str:
    """``auto`` -> ``truth`` when every val/test study has synthetic truth labels, else ``report``."""
    if requested != "auto":
        if requested == "truth":
            part = index[index["split"].isin(["val", "test"])]
            if part[[TRUTH_PREFIX + n for n in ABNORMALITIES]].isna().any().any():
                raise ValueError(
                    "evaluate.label_source=truth but some val/test studies have no synthetic truth labels"
                )
        return requested
    part = index[index["split"].isin(["val", "test"])]
    cols = [TRUTH_PREFIX + n for n in ABNORMALITIES]
    has = all(c in part.columns for c in cols) and len(part) > 0 and not part[cols].isna().any().any()
    return "truth" if has else "report"


def reference(rows: pd.DataFrame, source: str) -> Reference:
    if source == "truth":
        y = rows[[TRUTH_PREFIX + n for n in ABNORMALITIES]].astype(float).to_numpy().astype(np.int8)
        return Reference(y, np.ones_like(y, bool))
    y = rows[list(ABNORMALITIES)].to_numpy(dtype=np.int8)
    unc = rows[[UNCERTAIN_PREFIX + n for n in ABNORMALITIES]].to_numpy(dtype=np.int8)
    return Reference(y, unc == 0)


@dataclass
class StudyOutput:
    """What one test study contributes to the stage's outputs."""

    probs: np.ndarray
    report: grounded.GroundedReport
    loc: dict[str, dict[str, Any]]
    organ_dice: dict[str, dict[str, float | None]]


def _predict_grid(
    arrays: dict[str, np.ndarray], package: Any, device: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs (18,), organ ids on the model grid, raw maps (x, y, z, 18) on the model grid)."""
    from exact_ct.model.inference import infer_grid

    res = infer_grid(normalise(arrays["image"], package.plan), package, device)
    return (
        res.probs.astype(np.float64),
        res.organ_probs.argmax(0).astype(np.uint8),
        np.moveaxis(res.maps, 0, -1),
    )


def _canonical_hu(row: Any, arrays: dict[str, np.ndarray], interim: Path | None) -> np.ndarray:
    """The ingest volume when the interim tree is given and holds it; else the cached image mapped back."""
    if interim is not None:
        path = interim / "ingest" / str(row.batch) / "volumes" / f"{row.study_id}.nii.gz"
        if path.is_file():
            hu, aff = load_canonical(path)
            if tuple(hu.shape) == tuple(int(v) for v in arrays["src_shape"]) and np.allclose(
                aff, arrays["src_affine"], atol=1e-3
            ):
                return np.asarray(hu)
            log.warning(
                "study %s: ingest volume grid differs from the cache; montage uses the cached image",
                row.study_id,
            )
    return to_canonical(
        arrays["image"],
        arrays["grid_affine"],
        arrays["src_affine"],
        tuple(int(v) for v in arrays["src_shape"]),
        order=1,
        dtype=np.int16,
    )


def evaluate_study(
    row: Any,
    dataset_dir: Path,
    package: Any,
    thresholds: dict[str, float],
    ref_row: np.ndarray,
    cfg: EvaluateConfig,
    study_dir: Path | None,
    interim: Path | None,
) -> StudyOutput:
    """Predict one test study; localization and organ Dice on the model grid; explanation on the canonical grid."""
    arrays = load_npz(dataset_dir / str(row.cache))
    probs, organs_g, maps_g = _predict_grid(arrays, package, cfg.device)
    spacing = tuple(float(s) for s in package.plan.spacing_xyz_mm)
    regions_g = package.region_masks(organs_g, spacing)
    conf_g = package.confine(maps_g, organs_g, spacing)

    loc: dict[str, dict[str, Any]] = {}
    if "truth_lesions" in arrays:
        for a, name in enumerate(ABNORMALITIES):
            mask = arrays["truth_lesions"][a] > 0
            if ref_row[a] != 1 or not mask.any():
                continue
            region = regions_g[a] if regions_g is not None else None
            loc[name] = localization.localize_one(
                conf_g[..., a],
                mask,
                region,
                spacing_mm=spacing,
                topk_percent=cfg.topk_percent,
                tolerance_mm=cfg.pointing_tolerance_mm,
                hit_dice=cfg.hit_dice,
            )
    organ = {"pseudo_masks": localization.organ_dice(organs_g, arrays["organs"])}
    if "truth_organs" in arrays:
        organ["truth"] = localization.organ_dice(organs_g, arrays["truth_organs"])

    # The grounded report is read on the canonical grid, so its slice numbers are those of the scan.
    g_aff, s_aff, s_shape = (
        arrays["grid_affine"],
        arrays["src_affine"],
        tuple(int(v) for v in arrays["src_shape"]),
    )
    organs_c = to_canonical(organs_g, g_aff, s_aff, s_shape, order=0, dtype=np.uint8)
    maps_c = to_canonical(maps_g, g_aff, s_aff, s_shape, order=1, dtype=np.float32)
    conf_c = package.confine(maps_c, organs_c, spacing_from_affine(s_aff))
    prob_map = {n: float(p) for n, p in zip(ABNORMALITIES, probs, strict=True)}
    report = grounded.build_report(prob_map, thresholds, conf_c, organs_c, s_aff, cfg.grounding)
    if study_dir is not None:
        study_dir.mkdir(parents=True, exist_ok=True)
        explain.save_maps(study_dir, conf_c, organs_c, s_aff)
        hu = _canonical_hu(row, arrays, interim)
        explain.montage(
            study_dir / "montage.png",
            hu,
            organs_c,
            conf_c,
            s_aff,
            report.findings,
            prob_map,
            cfg.montage_findings,
        )
        write_text_atomic(
            study_dir / "report.md",
            grounded.to_markdown(report, f"Grounded report {row.study_id}", package.version),
        )
        write_json_atomic(
            study_dir / "findings.json",
            {"probabilities": prob_map, "thresholds": thresholds, **report.to_json()},
        )
    return StudyOutput(probs, report, loc, organ)


def predict_probs(
    rows: pd.DataFrame, dataset_dir: Path, package: Any, device: str, desc: str = "predict"
) -> np.ndarray:
    """Study-level probabilities (n, 18) of cached studies."""
    out = np.zeros((len(rows), len(ABNORMALITIES)), dtype=np.float64)
    for i, row in enumerate(progress(rows.itertuples(index=False), desc, total=len(rows), unit="study")):
        probs, _, _ = _predict_grid(load_npz(dataset_dir / str(row.cache), keys=("image",)), package, device)
        out[i] = probs
    return out


def evaluate(
    cfg: EvaluateConfig,
    dataset_dir: Path,
    model_dir: Path,
    out: Path,
    *,
    seed: int,
    interim: Path | None = None,
    labeller: Any = None,
) -> dict[str, Any]:
    """Run the whole stage; returns the metrics written to ``out/metrics.json``.

    Args:
        labeller: a ``ReportLabeller`` (tests pass a shared one: building it loads spaCy).
    """
    import torch

    from exact_ct.devices import choose_device
    from exact_ct.model.package import load_package

    torch.set_num_threads(max(1, cfg.threads))
    dataset_dir, out = Path(dataset_dir), Path(out)
    device = str(choose_device(cfg.device))
    cfg = replace(cfg, device=device)  # evaluate_study runs on the resolved device, never on "auto"
    package = load_package(model_dir, device)
    index = load_index(dataset_dir)
    val_rows = index[index["split"] == "val"].reset_index(drop=True)
    test_rows = index[index["split"] == "test"].reset_index(drop=True)
    if len(test_rows) == 0:
        raise ValueError(
            f"{dataset_dir}/index.csv: the test split is empty; nothing to evaluate (add batches)"
        )
    source = resolve_label_source(index, cfg.label_source)
    ref_val, ref_test = reference(val_rows, source), reference(test_rows, source)
    data_version = (
        json.loads((dataset_dir / "dataset.json").read_text()).get("data_version", "")
        if (dataset_dir / "dataset.json").is_file()
        else ""
    )

    log.info("evaluate: %d val and %d test studies, labels from %s", len(val_rows), len(test_rows), source)
    p_val = predict_probs(val_rows, dataset_dir, package, device, "evaluate val")
    if len(val_rows):
        thresholds = metrics.choose_thresholds(
            ref_val.y, p_val, ABNORMALITIES, ref_val.valid, cfg.threshold_method
        )
        threshold_source = "validation split"
    else:  # never fall back to the test split: use the thresholds the training run fixed on its validation set
        thresholds = {n: float(package.thresholds.get(n, 0.5)) for n in ABNORMALITIES}
        threshold_source = "model package (validation split is empty)"
        log.warning("evaluate: validation split empty; thresholds from the model package")

    studies_dir = out / "studies"
    explain_ids = (
        list(test_rows["study_id"])
        if cfg.explain_max <= 0
        else list(test_rows["study_id"])[: cfg.explain_max]
    )
    if studies_dir.is_dir():  # the stage fully rewrites its outs
        for entry in studies_dir.iterdir():
            if entry.name not in explain_ids:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    p_test = np.zeros((len(test_rows), len(ABNORMALITIES)), dtype=np.float64)
    reports: list[grounded.GroundedReport] = []
    loc_rows: dict[str, list[dict[str, Any]]] = {n: [] for n in ABNORMALITIES}
    organ_rows: dict[str, list[dict[str, float | None]]] = {}
    test_iter = progress(
        test_rows.itertuples(index=False), "evaluate test", total=len(test_rows), unit="study"
    )
    for i, row in enumerate(test_iter):
        sdir = studies_dir / str(row.study_id) if row.study_id in explain_ids else None
        res = evaluate_study(row, dataset_dir, package, thresholds, ref_test.y[i], cfg, sdir, interim)
        p_test[i] = res.probs
        reports.append(res.report)
        for name, r in res.loc.items():
            loc_rows[name].append(r)
        for ref_name, d in res.organ_dice.items():
            organ_rows.setdefault(ref_name, []).append(d)

    diag = metrics.diagnosis_metrics(
        ref_val.y if len(val_rows) else np.zeros((0, len(ABNORMALITIES))),
        p_val,
        ref_val.valid if len(val_rows) else None,
        ref_test.y,
        p_test,
        ref_test.valid,
        ABNORMALITIES,
        method=cfg.threshold_method,
        n_boot=cfg.bootstrap,
        ci=cfg.ci,
        seed=seed,
        ece_bins=cfg.ece_bins,
    )
    if not len(val_rows):
        diag = _rethreshold(diag, thresholds, ref_test, p_test)

    if labeller is None:
        from exact_ct.reports import ReportLabeller

        labeller = ReportLabeller()
    relabelled = [r.labels for r in labeller.label_many([rep.text for rep in reports])]
    gr = grounded.score_reports([rep.stated() for rep in reports], relabelled, ref_test.y, ref_test.valid)

    result: dict[str, Any] = {
        "model_version": package.version,
        "data_version": data_version,
        "label_source": source,
        "threshold_method": cfg.threshold_method,
        "threshold_source": threshold_source,
        "bootstrap": cfg.bootstrap,
        "ci": cfg.ci,
        "seed": seed,
        "studies": {"val": len(val_rows), "test": len(test_rows)},
        "diagnosis": {"per_abnormality": diag["per_abnormality"], "macro": diag["macro"]},
        "thresholds": thresholds,
        "localization": localization.summarise(loc_rows),
        "organ_dice": {k: localization.mean_organ_dice(v) for k, v in organ_rows.items()},
        "grounded_report": gr,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", result)
    pred = pd.DataFrame(
        np.vstack([p_val, p_test]).round(6) if len(val_rows) else p_test.round(6), columns=list(ABNORMALITIES)
    )
    pred.insert(0, "split", ["val"] * len(val_rows) + ["test"] * len(test_rows))
    pred.insert(0, "study_id", list(val_rows["study_id"]) + list(test_rows["study_id"]))
    write_csv_atomic(out / "predictions.csv", pred)
    plots.write_curve_csvs(out / "plots", diag["curves"])
    figs = plots.curve_pngs(out / "figures", diag["curves"], diag["per_abnormality"])
    vt = ref_test.valid
    figs["calibration"] = plots.calibration_png(
        out / "figures" / "calibration.png", ref_test.y[vt], p_test[vt], cfg.ece_bins
    )

    order = sorted(
        range(len(test_rows)), key=lambda i: (-len(reports[i].findings), str(test_rows.at[i, "study_id"]))
    )
    gallery = [
        {
            "study_id": str(test_rows.at[i, "study_id"]),
            "montage": studies_dir / str(test_rows.at[i, "study_id"]) / "montage.png",
            "report": reports[i].text,
        }
        for i in order
        if test_rows.at[i, "study_id"] in explain_ids
    ][: cfg.gallery_max]
    write_html_report(out / "index.html", result, figs, gallery)
    m = diag["macro"]
    log.info(
        "evaluate: macro AUROC %s, grounded-report macro F1 %s, localization findings %d",
        f"{m['auroc']:.3f}" if m["auroc"] is not None else "n/a",
        f"{gr['macro_f1']:.3f}" if gr["macro_f1"] is not None else "n/a",
        result["localization"]["overall"]["findings"],
    )
    return result


def _rethreshold(
    diag: dict[str, Any], thresholds: dict[str, float], ref: Reference, p: np.ndarray
) -> dict[str, Any]:
    """Recompute the thresholded metrics with given thresholds (used when the validation split is empty)."""
    for j, name in enumerate(ABNORMALITIES):
        m = ref.valid[:, j]
        diag["per_abnormality"][name].update(metrics.binary_metrics(ref.y[m, j], p[m, j], thresholds[name]))
        diag["per_abnormality"][name]["threshold"] = thresholds[name]
    per = diag["per_abnormality"]
    diag["macro"]["f1"] = metrics.macro({n: per[n]["f1"] for n in ABNORMALITIES if per[n]["positives"] > 0})
    diag["macro"]["sensitivity"] = metrics.macro({n: per[n]["sensitivity"] for n in ABNORMALITIES})
    diag["macro"]["specificity"] = metrics.macro({n: per[n]["specificity"] for n in ABNORMALITIES})
    return diag
