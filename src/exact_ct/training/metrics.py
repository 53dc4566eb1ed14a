"""Validation metrics: AUROC per abnormality (scikit-learn), thresholds, organ Dice."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

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


def macro(values: dict[str, float | None]) -> float:
    """Mean over defined values; NaN when none is defined."""
    vals = [v for v in values.values() if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def youden_thresholds(y: np.ndarray, p: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Threshold per abnormality maximising Youden's J (sensitivity + specificity - 1) on validation.

    Abnormalities without both classes fall back to 0.5.
    """
    valid = np.ones_like(y, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    out: dict[str, float] = {}
    for j, name in enumerate(ABNORMALITIES):
        yy, pp = y[valid[:, j], j], p[valid[:, j], j]
        if len(np.unique(yy)) < 2:
            out[name] = 0.5
            continue
        fpr, tpr, thr = roc_curve(yy, pp)
        best = int(np.argmax(tpr - fpr))
        out[name] = float(min(1.0, thr[best]))
    return out


def f1_at(
    y: np.ndarray, p: np.ndarray, thresholds: dict[str, float], valid: np.ndarray | None = None
) -> dict[str, float]:
    valid = np.ones_like(y, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    return {
        name: float(f1_score(y[valid[:, j], j], p[valid[:, j], j] >= thresholds[name], zero_division=0))
        for j, name in enumerate(ABNORMALITIES)
    }


def dice_per_label(pred: np.ndarray, ref: np.ndarray, labels: range | list[int]) -> dict[int, float | None]:
    """Dice per label id; ``None`` when the label is absent from both."""
    out: dict[int, float | None] = {}
    for lab in labels:
        a, b = pred == lab, ref == lab
        denom = int(a.sum()) + int(b.sum())
        out[lab] = 2.0 * float(np.logical_and(a, b).sum()) / denom if denom else None
    return out
