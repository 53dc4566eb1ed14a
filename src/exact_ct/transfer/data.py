"""Labelled studies for fine-tuning, brought onto the pretrained package's model grid.

Three sources, all ending as :class:`Sample` lists on the package's grid (same canonicalisation as
pretraining: RAS+ reorientation, body-centred crop/pad, fixed spacing, the package's HU normalisation):

* a segmentation folder ``DIR/images/<case>.nii.gz`` + ``DIR/labels/<case>.nii.gz`` (binary lesion mask,
  any grid: it is resampled through world coordinates, nearest neighbour, onto the image's model grid);
* a classification CSV (``study_id`` + a 0/1 label column) whose volumes are found by id in a folder
  (``<id>.nii.gz``, ``volumes/<id>.nii.gz`` or ``images/<id>.nii.gz``) or named in a ``volume`` column;
* a ``build_dataset`` output folder (index.csv, plan.json, cache/), whose cached studies are already on
  the model grid; segmentation targets then come from the synthetic truth lesion masks in the cache.

Nothing is skipped silently: every study left out is returned in ``quarantine`` with a rule and message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from exact_ct.dataset.grid import GridPlan, mask_to_model_grid, normalise, to_model_grid

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ["path", "rule", "message"]
NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class Sample:
    """One labelled study on the model grid.

    Attributes:
        study_id: case name (file stem) or study id.
        image: (C, x, y, z) float32, normalised with the package's plan (exact_ct.dataset.grid.normalise).
        mask: segmentation target (x, y, z) uint8 0/1, or None for classification.
        label: classification target 0/1, or None for segmentation.
    """

    study_id: str
    image: np.ndarray
    mask: np.ndarray | None = None
    label: float | None = None


@dataclass
class Loaded:
    samples: list[Sample] = field(default_factory=list)
    quarantine: list[dict[str, str]] = field(default_factory=list)

    def quarantine_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.quarantine, columns=QUARANTINE_COLUMNS)


def case_name(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_build_dataset(folder: Path) -> bool:
    return (Path(folder) / "index.csv").is_file() and (Path(folder) / "plan.json").is_file()


def _nifti_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {case_name(p): p for p in sorted(folder.iterdir()) if p.name.endswith(NIFTI_SUFFIXES)}


def _load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (RAS+) array and affine; raises ValueError naming what is wrong."""
    from exact_ct.io import load_canonical

    arr, affine = load_canonical(path)
    arr = np.asarray(arr)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("volume holds NaN or infinite values")
    return arr, affine


def image_on_grid(hu: np.ndarray, affine: np.ndarray, plan: GridPlan) -> tuple[np.ndarray, np.ndarray]:
    """(normalised float32 image on the model grid, grid affine) of a canonical HU volume."""
    image, g_aff = to_model_grid(np.asarray(hu), affine, plan)
    return normalise(image, plan), g_aff


def load_segmentation_folder(folder: Path, plan: GridPlan) -> Loaded:
    """``folder/images/<case>.nii.gz`` + ``folder/labels/<case>.nii.gz`` pairs (any nonzero label = lesion)."""
    folder = Path(folder)
    images, labels = _nifti_files(folder / "images"), _nifti_files(folder / "labels")
    if not images:
        raise FileNotFoundError(f"{folder}/images: no .nii/.nii.gz volumes (layout: docs/transfer.md)")
    out = Loaded()
    for case in sorted(set(labels) - set(images)):
        out.quarantine.append(
            {"path": str(labels[case]), "rule": "missing_image", "message": f"no images/{case}.nii.gz"}
        )
    for case, img_path in images.items():
        if case not in labels:
            out.quarantine.append(
                {"path": str(img_path), "rule": "missing_label", "message": f"no labels/{case}.nii.gz"}
            )
            continue
        try:
            hu, affine = _load_volume(img_path)
        except Exception as e:  # unreadable or malformed input: quarantined, the rest goes on
            out.quarantine.append({"path": str(img_path), "rule": "unreadable_image", "message": str(e)})
            continue
        try:
            lab, lab_aff = _load_volume(labels[case])
        except Exception as e:
            out.quarantine.append({"path": str(labels[case]), "rule": "unreadable_label", "message": str(e)})
            continue
        image, g_aff = image_on_grid(hu, affine, plan)
        mask = mask_to_model_grid((lab != 0).astype(np.uint8), lab_aff, g_aff, plan)
        if (lab != 0).any() and not mask.any():
            out.quarantine.append(
                {
                    "path": str(labels[case]),
                    "rule": "label_outside_grid",
                    "message": "the lesion mask lies outside the image's model-grid field of view",
                }
            )
            continue
        out.samples.append(Sample(case, image, mask=mask))
    return out


def _check_plan(folder: Path, plan: GridPlan) -> None:
    from exact_ct.dataset.build import load_plan

    ds_plan = load_plan(folder)
    if tuple(ds_plan.size_xyz) != tuple(plan.size_xyz) or not np.allclose(
        ds_plan.spacing_xyz_mm, plan.spacing_xyz_mm
    ):
        raise ValueError(
            f"{folder}/plan.json: grid {ds_plan.size_xyz} at {ds_plan.spacing_xyz_mm} mm differs from the "
            f"model's {plan.size_xyz} at {plan.spacing_xyz_mm} mm; pass NIfTI volumes instead"
        )


def _cached_hu(folder: Path, rel: str) -> dict[str, np.ndarray]:
    from exact_ct.dataset.cache import load_npz

    return load_npz(folder / rel)


def load_build_dataset_segmentation(folder: Path, plan: GridPlan, target: str) -> Loaded:
    """Studies of a build_dataset folder whose cache holds synthetic truth lesions; ``target`` = 1 channel.

    Studies where ``target`` is truly absent get an empty mask (negatives teach the head too).
    """
    from exact_ct.dataset.build import load_index
    from exact_ct.schema import abnormality_index

    folder = Path(folder)
    _check_plan(folder, plan)
    channel = abnormality_index(target)
    out = Loaded()
    for row in load_index(folder).sort_values("study_id").itertuples(index=False):
        arrays = _cached_hu(folder, str(row.cache))
        if "truth_lesions" not in arrays:
            out.quarantine.append(
                {"path": str(row.cache), "rule": "no_lesion_masks", "message": "cache holds no truth lesions"}
            )
            continue
        mask = (arrays["truth_lesions"][channel] > 0).astype(np.uint8)
        out.samples.append(Sample(str(row.study_id), normalise(arrays["image"], plan), mask=mask))
    return out


def _binary(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if v in (0.0, 1.0) else None


def load_classification(
    labels_csv: Path | None, column: str, plan: GridPlan, data_dir: Path | None = None
) -> Loaded:
    """Studies with a 0/1 ``column`` label: from a CSV (volumes in ``data_dir`` or a ``volume`` column) or,
    when ``data_dir`` is a build_dataset folder, from its cache (labels from the CSV, else from the index:
    ``truth:<column>`` where filled, else ``<column>``)."""
    out = Loaded()
    if data_dir is not None and is_build_dataset(Path(data_dir)):
        from exact_ct.dataset.build import load_index

        folder = Path(data_dir)
        _check_plan(folder, plan)
        index = load_index(folder).set_index("study_id").sort_index()
        if labels_csv is not None:
            table = pd.read_csv(labels_csv, dtype={"study_id": str}).set_index("study_id")
            _require_column(table, column, labels_csv)
            labels = table[column]
        else:
            truth = f"truth:{column}"
            use_truth = truth in index.columns and index[truth].notna().all()
            if not use_truth and column not in index.columns:
                raise ValueError(f"{folder}/index.csv has no column {column!r} (nor {truth!r})")
            labels = index[truth if use_truth else column]
        for sid, value in labels.items():
            y = _binary(value)
            if sid not in index.index:
                out.quarantine.append(
                    {"path": str(sid), "rule": "unknown_study", "message": "not in index.csv"}
                )
            elif y is None:
                out.quarantine.append({"path": str(sid), "rule": "no_binary_label", "message": f"{value!r}"})
            else:
                arrays = _cached_hu(folder, str(index.loc[sid, "cache"]))
                out.samples.append(Sample(str(sid), normalise(arrays["image"], plan), label=y))
        return out
    if labels_csv is None:
        raise ValueError("classification needs --labels CSV (or a build_dataset folder as --data)")
    table = pd.read_csv(labels_csv, dtype={"study_id": str, "volume": str})
    _require_column(table, column, labels_csv)
    if "study_id" not in table.columns:
        raise ValueError(f"{labels_csv}: needs a study_id column")
    for row in table.sort_values("study_id").to_dict("records"):
        sid = str(row["study_id"])
        y = _binary(row[column])
        if y is None:
            out.quarantine.append({"path": sid, "rule": "no_binary_label", "message": f"{row[column]!r}"})
            continue
        path = _find_volume(sid, row.get("volume"), Path(labels_csv).parent, data_dir)
        if path is None:
            out.quarantine.append({"path": sid, "rule": "missing_volume", "message": "no volume found"})
            continue
        try:
            hu, affine = _load_volume(path)
        except Exception as e:
            out.quarantine.append({"path": str(path), "rule": "unreadable_image", "message": str(e)})
            continue
        out.samples.append(Sample(sid, image_on_grid(hu, affine, plan)[0], label=y))
    return out


def _require_column(table: pd.DataFrame, column: str, where: object) -> None:
    if column not in table.columns:
        raise ValueError(f"{where}: no label column {column!r}; columns: {list(table.columns)}")


def _find_volume(sid: str, volume: object, csv_dir: Path, data_dir: Path | None) -> Path | None:
    if isinstance(volume, str) and volume:
        p = Path(volume)
        p = p if p.is_absolute() else csv_dir / p
        return p if p.is_file() else None
    if data_dir is None:
        return None
    for sub in ("", "volumes", "images"):
        for suffix in NIFTI_SUFFIXES:
            p = Path(data_dir) / sub / f"{sid}{suffix}"
            if p.is_file():
                return p
    return None


def subsample(samples: list[Sample], n: int, seed: int) -> list[Sample]:
    """A seeded choice of ``n`` labelled studies (all when ``n`` is 0 or too large), kept in id order.

    Segmentation takes studies with a lesion first (annotated sets are collected around lesions) and
    fills up with lesion-free ones; classification keeps the class ratio, with at least one of each class.
    """
    if n <= 0 or n >= len(samples):
        return list(samples)
    rng = np.random.default_rng([seed, 17])
    if samples[0].mask is not None:
        pos = [i for i, s in enumerate(samples) if s.mask is not None and s.mask.any()]
        n_pos = min(n, len(pos))
    else:
        pos = [i for i, s in enumerate(samples) if s.label == 1.0]
        share = len(pos) / len(samples)
        n_pos = min(len(pos), max(1 if pos else 0, int(round(n * share))), n - 1)
    chosen = set(pos)
    neg = [i for i in range(len(samples)) if i not in chosen]
    n_pos = max(n_pos, n - len(neg))  # too few of the other kind: take more of this one
    keep = [*rng.permutation(pos)[:n_pos], *rng.permutation(neg)[: n - n_pos]]
    return [samples[int(i)] for i in sorted(keep)]
