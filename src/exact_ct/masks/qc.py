"""Mask QC: organ volumes against plausible ranges, left/right lung balance, missing organs, heart position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exact_ct.io import spacing_from_affine
from exact_ct.masks.config import QCConfig
from exact_ct.schema import ORGAN_IDS, ORGANS


@dataclass(frozen=True)
class QCIssue:
    """One failed rule: the rule name and a message naming the organ and the numbers."""

    rule: str
    message: str


def organ_volumes_ml(labels: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Volume in ml of every organ id 1-9 (0 when absent)."""
    voxel_ml = float(np.prod(spacing_from_affine(affine))) / 1000.0
    counts = np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=len(ORGANS))
    return {ORGANS[i]: round(float(counts[i]) * voxel_ml, 3) for i in ORGANS if i != 0}


def heart_between_lungs(labels: np.ndarray, min_share: float = 0.5) -> QCIssue | None:
    """``heart_position``: the heart lies between the lungs, so at most of its levels there is lung tissue
    both to its left and to its right. A "heart" in the upper abdomen (liver dome, stomach) fails.

    Args:
        labels: organ label map (RAS+: the patient's left has the smaller x index).
        min_share: share of the heart's axial slices that must have lung on both sides.
    """
    labels = np.asarray(labels)
    heart = labels == ORGAN_IDS["heart"]
    zs = np.flatnonzero(heart.any(axis=(0, 1)))
    if zs.size == 0:
        return None
    lungs = np.isin(labels, (ORGAN_IDS["lung_left"], ORGAN_IDS["lung_right"]))
    x = np.arange(labels.shape[0])
    flanked = 0
    for z in zs:
        hx = x[heart[:, :, z].any(axis=1)]
        lx = x[lungs[:, :, z].any(axis=1)]
        flanked += bool(lx.size) and lx.min() < hx.min() and lx.max() > hx.max()
    share = flanked / zs.size
    if share >= min_share:
        return None
    return QCIssue(
        "heart_position",
        f"heart has lung on both sides in only {share:.0%} of its {zs.size} slices (< {min_share:.0%}): "
        "not between the lungs",
    )


def check(
    volumes_ml: dict[str, float], cfg: QCConfig | None = None, labels: np.ndarray | None = None
) -> list[QCIssue]:
    """All rule failures for one mask (empty list = passes); ``labels`` enables the position rule."""
    cfg = cfg or QCConfig()
    issues: list[QCIssue] = []
    if labels is not None:
        issue = heart_between_lungs(labels)
        if issue is not None:
            issues.append(issue)
    for organ in cfg.required:
        if organ not in ORGAN_IDS:
            raise ValueError(f"pseudo_masks.qc.required names unknown organ {organ!r}")
        if volumes_ml.get(organ, 0.0) <= 0.0:
            issues.append(QCIssue("missing_organ", f"{organ} is missing from the mask"))
    for organ, lo in cfg.min_ml.items():
        v = volumes_ml.get(organ, 0.0)
        if 0.0 < v < lo:
            issues.append(QCIssue("volume_range", f"{organ} {v:.1f} ml < plausible minimum {lo:g} ml"))
    for organ, hi in cfg.max_ml.items():
        v = volumes_ml.get(organ, 0.0)
        if v > hi:
            issues.append(QCIssue("volume_range", f"{organ} {v:.1f} ml > plausible maximum {hi:g} ml"))
    left, right = volumes_ml.get("lung_left", 0.0), volumes_ml.get("lung_right", 0.0)
    if left > 0 and right > 0:
        ratio = max(left, right) / min(left, right)
        if ratio > cfg.lung_ratio_max:
            issues.append(
                QCIssue(
                    "lung_balance",
                    f"lung volumes left {left:.1f} ml / right {right:.1f} ml differ {ratio:.2f}x "
                    f"(> {cfg.lung_ratio_max:g}x)",
                )
            )
    return issues
