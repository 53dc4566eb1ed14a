"""Validation metrics: AUROC per abnormality (scikit-learn), macro mean, Youden thresholds, F1, Dice (MONAI)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score, roc_curve

from exact_ct.schema import ABNORMALITIES


def auroc_per_abnormality(
    y: np.ndarray, p: np.ndarray, valid: np.ndarray | None = None
) -> dict[str, float | None]:
    """AUROC per abnormality over valid rows; ``None`` when a split lacks positives or negatives."""
    y = np.asarray(y)
    p = np.asarray(p)
    valid = np.ones_like(y, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    out: dict[str, float | None] = {}
    for j, name in enumerate(ABNORMALITIES):
        yy, pp = y[valid[:, j], j], p[valid[:, j], j]
        out[name] = float(roc_auc_score(yy, pp)) if len(np.unique(yy)) == 2 else None
    return out


def macro(values: dict[str, Any]) -> float | None:
    """Mean of the defined (non-None, non-NaN) values; ``None`` when none is defined."""
    vals = [float(v) for v in values.values() if v is not None and not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else None


def choose_thresholds(
    y: np.ndarray,
    p: np.ndarray,
    names: Sequence[str] = ABNORMALITIES,
    valid: np.ndarray | None = None,
    method: str = "youden",
) -> dict[str, float]:
    """Decision threshold per column, chosen on the split given (call it with the VALIDATION split).

    ``youden`` maximises sensitivity + specificity - 1 on the ROC curve; ``f1`` maximises F1 on the
    precision-recall curve. A column without both classes gets 0.5 (nothing to choose from). Training
    stores the Youden thresholds in the package; evaluation may choose again with either method.
    """
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    valid = np.ones_like(y, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        yy, pp = y[valid[:, j], j], p[valid[:, j], j]
        if len(np.unique(yy)) != 2:
            out[name] = 0.5
            continue
        if method == "youden":
            fpr, tpr, thr = roc_curve(yy, pp)
            best = int(np.argmax(tpr - fpr))
            out[name] = float(min(1.0, thr[best]))
        elif method == "f1":
            prec, rec, thr = precision_recall_curve(yy, pp)
            with np.errstate(invalid="ignore", divide="ignore"):
                f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)[:-1]
            out[name] = float(thr[int(np.argmax(f1))])
        else:
            raise ValueError(f"unknown threshold method {method!r}")
    return out


def f1_at(
    y: np.ndarray, p: np.ndarray, thresholds: dict[str, float], valid: np.ndarray | None = None
) -> dict[str, float]:
    valid = np.ones_like(y, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    return {
        name: float(f1_score(y[valid[:, j], j], p[valid[:, j], j] >= thresholds[name], zero_division=0))
        for j, name in enumerate(ABNORMALITIES)
    }


def dice(pred: np.ndarray, ref: np.ndarray) -> float | None:
    """Dice of two binary masks (``monai.metrics.compute_dice``); ``None`` when both are empty.

    Computed in float64 on exact voxel counts, so the value is exactly 2 |A & B| / (|A| + |B|).
    """
    from monai.metrics import compute_dice

    a, b = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    either = a | b
    if not either.any():
        return None
    # crop to the bounding box of either mask: the same counts, on far fewer voxels than a whole volume
    box = tuple(
        slice(int(nz[0]), int(nz[-1]) + 1)
        for ax in range(either.ndim)
        for nz in [np.flatnonzero(either.any(axis=tuple(i for i in range(either.ndim) if i != ax)))]
    )
    at, bt = torch.from_numpy(np.ascontiguousarray(a[box])), torch.from_numpy(np.ascontiguousarray(b[box]))
    # two channels (background, mask): MONAI reads a single channel as label ids and sums them as integers
    y_pred = torch.stack([~at, at])[None]
    y = torch.stack([~bt, bt])[None].to(torch.float64)
    return float(compute_dice(y_pred, y, include_background=False, ignore_empty=False)[0, 0])


def dice_per_label(pred: np.ndarray, ref: np.ndarray, labels: Iterable[int]) -> dict[int, float | None]:
    """:func:`dice` per label id of two label maps; ``None`` where the label is in neither."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    return {int(lab): dice(pred == lab, ref == lab) for lab in labels}


def nan_to_none(obj: Any) -> Any:
    """NaN (an undefined metric, e.g. a Dice without organs) -> None in nested dicts and lists, so the
    metrics JSON stays standard."""
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
