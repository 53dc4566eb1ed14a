"""The build_dataset library: gather batches, fingerprint, plan the grid, cache studies, split, index.

Layout written under ``out`` (the stage's outs)::

    fingerprint.json   dataset fingerprint (spacings, shapes, body extents, HU percentiles)
    plan.json          the model grid + normalisation (GridPlan), read by train and by inference
    cache/<study>.npz  one compressed study on the model grid (see exact_ct.dataset.cache)
    index.csv          study_id, patient_id, batch, split, cache, 18 binary labels,
                       18 ``uncertain:<name>`` flags, 18 ``truth:<name>`` (synthetic truth, else empty)
    quarantine.csv     study_id, batch, rule, message (studies left out, with the reason)
    dataset.json       counts and the data version (hash of index, plan and every cache file)
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from exact_ct.dataset.cache import save_npz
from exact_ct.dataset.config import BuildDatasetConfig
from exact_ct.dataset.fingerprint import StudyFingerprint, aggregate, plan_grid, study_fingerprint
from exact_ct.dataset.grid import GridPlan, mask_to_model_grid, to_model_grid
from exact_ct.dataset.labels import TRUTH_PREFIX, UNCERTAIN_PREFIX, binarise
from exact_ct.dataset.split import SPLITS, assign_split
from exact_ct.io import load_canonical, sha256_file, write_csv_atomic, write_json_atomic
from exact_ct.parallel import map_ordered
from exact_ct.schema import ABNORMALITIES, slug

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ["study_id", "batch", "rule", "message"]


@dataclass(frozen=True)
class StudySource:
    """Where one study's inputs live (all paths absolute or relative to the working directory)."""

    study_id: str
    patient_id: str
    batch: str
    volume: Path
    mask: Path
    truth_organs: Path | None = None
    truth_lesions: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Inputs:
    studies: list[StudySource]
    labels: pd.DataFrame  # index study_id, the 18 columns (raw 1/0/-1/empty)
    truth_labels: pd.DataFrame  # index study_id, the 18 columns (0/1); empty frame when no synthetic truth
    quarantine: list[dict[str, str]]


def _truth_map(truth_dir: Path) -> tuple[dict[str, str], pd.DataFrame]:
    """study_id -> accession for the synthetic truth of one batch, and the truth labels by study_id."""
    from exact_ct.privacy import study_pseudonym

    table = pd.read_csv(truth_dir / "labels.csv", dtype={"accession_number": str, "patient_id": str})
    acc = table["accession_number"].astype(str)
    ids = [study_pseudonym(a) for a in acc]
    mapping = dict(zip(ids, acc, strict=True))
    labels = table.assign(study_id=ids).set_index("study_id")[list(ABNORMALITIES)]
    return mapping, labels


def gather_inputs(interim: Path, batches: list[str], synth: Path | None = None) -> Inputs:
    """Collect every study of the registered batches that has a volume, a pseudo mask and labels.

    Studies missing one of them are quarantined with the rule that failed; nothing is skipped silently.
    """
    studies: list[StudySource] = []
    quarantine: list[dict[str, str]] = []
    label_frames: list[pd.DataFrame] = []
    truth_frames: list[pd.DataFrame] = []
    for batch in batches:
        ingest = interim / "ingest" / batch
        manifest_path = ingest / "manifest.csv"
        labels_path = interim / "parse_reports" / batch / "labels.csv"
        masks = interim / "pseudo_masks" / batch / "masks"
        for p in (manifest_path, labels_path):
            if not p.is_file():
                raise FileNotFoundError(
                    f"batch {batch!r}: {p} is missing; run the per-batch stages first (dvc repro)"
                )
        manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
        labels = pd.read_csv(labels_path, dtype={"study_id": str}).set_index("study_id")
        label_frames.append(labels[list(ABNORMALITIES)])
        truth_ids: dict[str, str] = {}
        truth_dir = synth / batch / "truth" if synth is not None else None
        if truth_dir is not None and (truth_dir / "labels.csv").is_file():
            truth_ids, truth_labels = _truth_map(truth_dir)
            truth_frames.append(truth_labels)
        for row in manifest.itertuples(index=False):
            sid = str(row.study_id)
            rel = str(getattr(row, "volume", "") or f"volumes/{sid}.nii.gz")
            # the manifest's path is relative to the batch folder; a repo-relative or absolute one also works
            rel_path = Path(rel)
            if rel_path.is_absolute() or (not (ingest / rel_path).is_file() and rel_path.is_file()):
                volume = rel_path
            else:
                volume = ingest / rel_path
            mask = masks / f"{sid}.nii.gz"
            problem = None
            if not volume.is_file():
                problem = ("volume_exists", f"{volume} not found")
            elif not mask.is_file():
                problem = ("pseudo_mask_exists", f"{mask} not found (pseudo_masks quarantined or skipped it)")
            elif sid not in labels.index:
                problem = ("labels_exist", f"no row for the study in {labels_path}")
            if problem:
                quarantine.append(
                    {"study_id": sid, "batch": batch, "rule": problem[0], "message": problem[1]}
                )
                continue
            t_org, t_les = None, {}
            if sid in truth_ids and truth_dir is not None:
                acc = truth_ids[sid]
                cand = truth_dir / "organs" / f"{acc}.nii.gz"
                t_org = cand if cand.is_file() else None
                les_dir = truth_dir / "lesions" / acc
                t_les = {
                    n: les_dir / f"{slug(n)}.nii.gz"
                    for n in ABNORMALITIES
                    if (les_dir / f"{slug(n)}.nii.gz").is_file()
                }
            studies.append(StudySource(sid, str(row.patient_id), batch, volume, mask, t_org, t_les))
    labels_all = pd.concat(label_frames) if label_frames else pd.DataFrame(columns=list(ABNORMALITIES))
    labels_all = labels_all[~labels_all.index.duplicated(keep="first")]
    truth_all = pd.concat(truth_frames) if truth_frames else pd.DataFrame(columns=list(ABNORMALITIES))
    return Inputs(studies, labels_all, truth_all, quarantine)


def _fingerprint_job(args: tuple[StudySource, int, float]) -> StudyFingerprint | tuple[str, str]:
    src, n_samples, thr = args
    try:
        hu, aff = load_canonical(src.volume)
        organs, m_aff = load_canonical(src.mask)
        if organs.shape != hu.shape or not np.allclose(m_aff, aff, atol=1e-3):
            return ("mask_grid", f"pseudo mask grid {organs.shape} differs from volume grid {hu.shape}")
        return study_fingerprint(src.study_id, hu, aff, organs, n_samples, thr)
    except Exception as e:  # a broken file must not stop the batch: it is quarantined with the reason
        return ("readable", f"{type(e).__name__}: {e}")


def _cache_job(args: tuple[StudySource, GridPlan, str]) -> str:
    """Resample one study onto the model grid and write its npz; returns the cache file's sha256."""
    src, plan, out_path = args
    hu, aff = load_canonical(src.volume)
    organs, _ = load_canonical(src.mask)
    image, g_aff = to_model_grid(hu, aff, plan)
    arrays: dict[str, np.ndarray] = {
        "image": image,
        "organs": mask_to_model_grid(organs, aff, g_aff, plan),
        "grid_affine": g_aff,
        "src_affine": np.asarray(aff, dtype=np.float64),
        "src_shape": np.asarray(hu.shape[:3], dtype=np.int64),
    }
    if src.truth_organs is not None:
        t_org, t_aff = load_canonical(src.truth_organs)
        arrays["truth_organs"] = mask_to_model_grid(t_org, t_aff, g_aff, plan)
        lesions = np.zeros((len(ABNORMALITIES), *plan.size_xyz), dtype=np.uint8)
        for name, path in src.truth_lesions.items():
            les, l_aff = load_canonical(path)
            lesions[ABNORMALITIES.index(name)] = mask_to_model_grid(
                (les > 0).astype(np.uint8), l_aff, g_aff, plan
            )
        arrays["truth_lesions"] = lesions
    save_npz(out_path, arrays)
    return sha256_file(out_path)


def prevalence(index: pd.DataFrame) -> dict[str, Any]:
    """Per-split counts: studies, patients, and per abnormality positives/negatives/uncertain/rate."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        part = index[index["split"] == split]
        per: dict[str, Any] = {}
        for name in ABNORMALITIES:
            pos = int(part[name].sum())
            per[name] = {
                "positive": pos,
                "negative": int(len(part) - pos),
                "uncertain": int(part[UNCERTAIN_PREFIX + name].sum()),
                "rate": round(pos / len(part), 4) if len(part) else None,
            }
        out[split] = {
            "studies": int(len(part)),
            "patients": int(part["patient_id"].nunique()),
            "abnormalities": per,
        }
    return out


def build_dataset(
    cfg: BuildDatasetConfig,
    batches: list[str],
    interim: Path,
    out: Path,
    reports: Path,
    synth: Path | None = None,
) -> dict[str, Any]:
    """Run the whole stage; returns the summary written to ``out/dataset.json``."""
    profile = cfg.grid()
    inputs = gather_inputs(interim, batches, synth)
    quarantine = list(inputs.quarantine)
    jobs = [(s, cfg.fingerprint_samples, profile.body_threshold_hu) for s in inputs.studies]
    fps: list[StudyFingerprint] = []
    kept: list[StudySource] = []
    for src, res in zip(
        inputs.studies,
        map_ordered(_fingerprint_job, jobs, workers=cfg.workers, desc="fingerprint"),
        strict=True,
    ):
        if isinstance(res, tuple):
            quarantine.append(
                {"study_id": src.study_id, "batch": src.batch, "rule": res[0], "message": res[1]}
            )
        else:
            fps.append(res)
            kept.append(src)
    fingerprint = aggregate(fps)
    plan = plan_grid(fingerprint, profile)
    fingerprint.pop("_body_samples")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "fingerprint.json", fingerprint)
    write_json_atomic(out / "plan.json", plan.to_json())

    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    wanted = {f"{s.study_id}.npz" for s in kept}
    for stale in cache_dir.glob("*.npz"):  # the stage fully rewrites its outs: drop studies no longer present
        if stale.name not in wanted:
            stale.unlink()
    cache_jobs = [(s, plan, str(cache_dir / f"{s.study_id}.npz")) for s in kept]
    hashes = list(map_ordered(_cache_job, cache_jobs, workers=cfg.workers, desc="cache"))

    raw = inputs.labels.loc[[s.study_id for s in kept]].reset_index(drop=True)
    binary, uncertain, problems = binarise(raw, cfg.binary_policy)
    for p in problems:
        log.warning("labels: unexpected value at %s; treated as not mentioned", p)
    index = pd.DataFrame(
        {
            "study_id": [s.study_id for s in kept],
            "patient_id": [s.patient_id for s in kept],
            "batch": [s.batch for s in kept],
            "split": [assign_split(s.patient_id, cfg.split) for s in kept],
            "cache": [f"cache/{s.study_id}.npz" for s in kept],
        }
    )
    truth_cols = {}
    for name in ABNORMALITIES:
        col = [
            inputs.truth_labels.at[s.study_id, name] if s.study_id in inputs.truth_labels.index else np.nan
            for s in kept
        ]
        truth_cols[TRUTH_PREFIX + name] = pd.array(col, dtype="Int8")
    index = pd.concat([index, binary, uncertain, pd.DataFrame(truth_cols)], axis=1)
    index = index.sort_values("study_id", kind="stable").reset_index(drop=True)
    write_csv_atomic(out / "index.csv", index)
    write_csv_atomic(out / "quarantine.csv", pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS))

    h = hashlib.sha256()
    h.update(sha256_file(out / "index.csv").encode())
    h.update(sha256_file(out / "plan.json").encode())
    for s, digest in sorted(zip([s.study_id for s in kept], hashes, strict=True)):
        h.update(f"{s}:{digest}".encode())
    prev = prevalence(index)
    summary = {
        "data_version": h.hexdigest(),
        "batches": list(batches),
        "studies": int(len(index)),
        "quarantined": len(quarantine),
        "splits": {k: v["studies"] for k, v in prev.items()},
        "with_truth": int(index[TRUTH_PREFIX + ABNORMALITIES[0]].notna().sum()),
        "plan": plan.to_json(),
    }
    write_json_atomic(out / "dataset.json", summary)
    reports.mkdir(parents=True, exist_ok=True)
    write_json_atomic(reports / "prevalence.json", prev)
    write_json_atomic(reports / "summary.json", {k: v for k, v in summary.items() if k != "plan"})
    log.info(
        "build_dataset: %d studies cached, %d quarantined, splits %s",
        len(index),
        len(quarantine),
        summary["splits"],
    )
    return summary


def load_index(dataset_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """index.csv with label columns as integers and truth columns as nullable integers."""
    return pd.read_csv(
        Path(dataset_dir) / "index.csv", dtype={"study_id": str, "patient_id": str, "batch": str}
    )


def load_plan(dataset_dir: str | os.PathLike[str]) -> GridPlan:
    import json

    return GridPlan.from_json(json.loads((Path(dataset_dir) / "plan.json").read_text()))
