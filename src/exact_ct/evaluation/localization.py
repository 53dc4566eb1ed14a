"""Localization metrics of anomaly maps against lesion masks: pointing game, top-k % Dice, HIT; organ Dice."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from exact_ct.schema import ORGANS

# one Dice (MONAI compute_dice), shared with training
from exact_ct.training.metrics import dice


def peak_index(score_map: np.ndarray) -> tuple[int, ...]:
    """Voxel index of the map's maximum (first in C order on ties, so the result is deterministic)."""
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(score_map)), score_map.shape))


def pointing_hit(
    score_map: np.ndarray,
    mask: np.ndarray,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    tolerance_mm: float = 0.0,
) -> bool:
    """Pointing game: is the map's peak inside the lesion mask (or within ``tolerance_mm`` of it)?"""
    m = np.asarray(mask) > 0
    if not m.any():
        raise ValueError("pointing game needs a non-empty lesion mask")
    peak = peak_index(score_map)
    if m[peak]:
        return True
    if tolerance_mm <= 0:
        return False
    dist = ndimage.distance_transform_edt(~m, sampling=tuple(float(s) for s in spacing_mm))
    return bool(dist[peak] <= tolerance_mm + 1e-6)


def topk_mask(score_map: np.ndarray, percent: float, region: np.ndarray | None = None) -> np.ndarray:
    """The ``percent`` % highest-scoring voxels of ``region`` (the whole volume when None).

    Exactly ``ceil(percent/100 * n_region)`` voxels are kept (ties broken by a stable sort), so the
    binarised map's size does not depend on the map's calibration.
    """
    m = np.asarray(score_map, dtype=np.float64)
    reg = np.ones(m.shape, bool) if region is None else np.asarray(region, dtype=bool)
    n = int(reg.sum())
    out = np.zeros(m.shape, bool)
    if n == 0:
        return out
    k = max(1, int(np.ceil(percent / 100.0 * n)))
    flat_idx = np.flatnonzero(reg)
    order = np.argsort(-m.ravel()[flat_idx], kind="stable")[:k]
    out.ravel()[flat_idx[order]] = True
    return out


def localize_one(
    score_map: np.ndarray,
    mask: np.ndarray,
    region: np.ndarray | None,
    *,
    spacing_mm: Sequence[float],
    topk_percent: float,
    tolerance_mm: float,
    hit_dice: float,
) -> dict[str, Any]:
    """Pointing hit, top-k % Dice and HIT of one finding (map already confined to its organ region)."""
    d = dice(topk_mask(score_map, topk_percent, region), mask) or 0.0
    return {
        "pointing": pointing_hit(score_map, mask, spacing_mm, tolerance_mm),
        "dice_topk": d,
        "hit": d >= hit_dice,
    }


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per abnormality: findings, pointing-game accuracy, mean top-k Dice, HIT rate; plus overall means."""
    per: dict[str, Any] = {}
    allr: list[dict[str, Any]] = []
    for name, rows in results.items():
        if not rows:
            continue
        allr += rows
        per[name] = {
            "findings": len(rows),
            "pointing_game": float(np.mean([r["pointing"] for r in rows])),
            "dice_topk": float(np.mean([r["dice_topk"] for r in rows])),
            "hit": float(np.mean([r["hit"] for r in rows])),
        }
    overall = (
        {
            "findings": len(allr),
            "pointing_game": float(np.mean([r["pointing"] for r in allr])),
            "dice_topk": float(np.mean([r["dice_topk"] for r in allr])),
            "hit": float(np.mean([r["hit"] for r in allr])),
            "macro_pointing_game": float(np.mean([v["pointing_game"] for v in per.values()])),
            "macro_hit": float(np.mean([v["hit"] for v in per.values()])),
        }
        if allr
        else {"findings": 0}
    )
    return {"per_abnormality": per, "overall": overall}


def organ_dice(
    pred: np.ndarray, ref: np.ndarray, labels: Iterable[int] = range(1, len(ORGANS))
) -> dict[str, float | None]:
    """Dice per organ name (ids 1-9), ``None`` when the organ is absent from both maps."""
    return {ORGANS[i]: dice(np.asarray(pred) == i, np.asarray(ref) == i) for i in labels}


def mean_organ_dice(rows: list[dict[str, float | None]]) -> dict[str, Any]:
    """Mean Dice per organ over studies (undefined entries skipped) and the mean over organs."""
    per: dict[str, float | None] = {}
    for organ in ORGANS.values():
        if organ == ORGANS[0]:
            continue
        vals = [v for r in rows if (v := r.get(organ)) is not None]
        per[organ] = float(np.mean(vals)) if vals else None
    defined = [v for v in per.values() if v is not None]
    return {"per_organ": per, "mean": float(np.mean(defined)) if defined else None, "studies": len(rows)}
