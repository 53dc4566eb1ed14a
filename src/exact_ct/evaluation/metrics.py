"""Diagnosis metrics: AUROC/AUPRC with seeded bootstrap intervals, validation thresholds, F1, calibration.

Every function takes ``y`` (n, C) binary labels, ``p`` (n, C) probabilities and an optional ``valid``
(n, C) mask (uncertain labels are left out of a column, never guessed). Point estimates come from
scikit-learn; the bootstrap uses a vectorised rank formula of the AUROC (identical to scikit-learn's,
ties included) because 1000 replicates x 18 columns of ``roc_auc_score`` calls would dominate the stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

# one copy of the macro mean and of the threshold choice, shared with training (callers use metrics.X)
from exact_ct.training.metrics import choose_thresholds, macro


def _valid(y: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    return np.ones_like(y, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)


def _both_classes(y: np.ndarray) -> bool:
    return bool(len(np.unique(y)) == 2)


def auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    """AUROC of one column; ``None`` when positives or negatives are missing."""
    return float(roc_auc_score(y, p)) if _both_classes(y) else None


def auprc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Average precision of one column; ``None`` without positives (undefined)."""
    return float(average_precision_score(y, p)) if _both_classes(y) else None


def rank_auroc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Row-wise AUROC of (B, n) arrays by the Mann-Whitney rank sum; NaN where a row lacks a class."""
    y = np.asarray(y, dtype=bool)
    ranks = rankdata(p, axis=-1)  # average ranks for ties, as scikit-learn's AUROC counts ties as 1/2
    n_pos = y.sum(-1).astype(np.float64)
    n_neg = y.shape[-1] - n_pos
    rank_sum = np.where(y, ranks, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def bootstrap_auroc(
    y: np.ndarray,
    p: np.ndarray,
    names: Sequence[str],
    valid: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[dict[str, list[float] | None], list[float] | None]:
    """Percentile bootstrap intervals of per-column and macro AUROC, resampling studies (rows).

    The same resampled rows serve every column, so the macro interval respects the correlation
    between abnormalities of one study. A replicate in which a column lacks a class is dropped for that
    column; the macro of a replicate averages the columns defined in it.

    Returns:
        (interval [lo, hi] per name or None when fewer than half of the replicates are defined,
        macro interval or None).
    """
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    valid = _valid(y, valid)
    if n_boot <= 0 or len(y) == 0:
        return {n: None for n in names}, None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    per = np.full((n_boot, len(names)), np.nan)
    for j in range(len(names)):
        yy, pp, vv = y[idx, j], p[idx, j], valid[idx, j]
        if vv.all():
            per[:, j] = rank_auroc(yy, pp)
            continue
        for b in range(n_boot):  # rows with uncertain labels differ per replicate: no rectangular array
            m = vv[b]
            per[b, j] = rank_auroc(yy[b, m][None], pp[b, m][None])[0] if m.any() else np.nan
    alpha = (1.0 - ci) / 2.0
    out: dict[str, list[float] | None] = {}
    for j, name in enumerate(names):
        col = per[:, j][~np.isnan(per[:, j])]
        # A point estimate undefined on the full set has no interval either (all replicates are subsets).
        defined = _both_classes(y[valid[:, j], j])
        out[name] = (
            [float(np.quantile(col, alpha)), float(np.quantile(col, 1 - alpha))]
            if defined and len(col) >= n_boot / 2
            else None
        )
    defined_cols = [j for j, n in enumerate(names) if out[n] is not None]
    macro_ci = None
    if defined_cols:
        sub = per[:, defined_cols]
        counts = (~np.isnan(sub)).sum(1)
        # replicates in which no column is defined carry no macro value (nanmean would warn and give NaN)
        macro_rep = np.nansum(sub, axis=1)[counts > 0] / counts[counts > 0]
        if len(macro_rep):
            macro_ci = [float(np.quantile(macro_rep, alpha)), float(np.quantile(macro_rep, 1 - alpha))]
    return out, macro_ci


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float | int | None]:
    """F1, sensitivity, specificity, precision and counts at ``p >= threshold`` for one column."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(p) >= threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    tn = int((~pred & ~y).sum())
    return {
        # F1 is undefined (not 0) when there is nothing to find and nothing was flagged.
        "f1": float(f1_score(y, pred, zero_division=0)) if tp + fp + fn else None,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float | None:
    """ECE with equal-width bins: sum over bins of (share of samples) x |accuracy - mean confidence|.

    Here "accuracy" is the observed positive rate in the bin and "confidence" the mean probability
    (the binary reliability-diagram form). The last bin includes p = 1.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if len(y) == 0:
        return None
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def curves(y: np.ndarray, p: np.ndarray) -> dict[str, list[float]] | None:
    """ROC and PR curve points of one column (for DVC plots and PNGs); ``None`` without both classes."""
    if not _both_classes(y):
        return None
    fpr, tpr, _ = roc_curve(y, p)
    prec, rec, _ = precision_recall_curve(y, p)
    return {
        "fpr": [round(float(v), 6) for v in fpr],
        "tpr": [round(float(v), 6) for v in tpr],
        "recall": [round(float(v), 6) for v in rec],
        "precision": [round(float(v), 6) for v in prec],
    }


def diagnosis_metrics(
    y_val: np.ndarray,
    p_val: np.ndarray,
    valid_val: np.ndarray | None,
    y_test: np.ndarray,
    p_test: np.ndarray,
    valid_test: np.ndarray | None,
    names: Sequence[str],
    *,
    method: str = "youden",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    ece_bins: int = 10,
) -> dict[str, Any]:
    """All diagnosis metrics of the test split, thresholds fixed on the validation split.

    Returns a JSON-ready dict: ``per_abnormality`` (auroc, auroc_ci, auprc, threshold, f1, sensitivity,
    specificity, precision, counts, ece, positives, negatives), ``macro`` (auroc, auroc_ci, auprc, f1,
    sensitivity, specificity, ece) and ``curves`` per abnormality.
    """
    y_test = np.asarray(y_test)
    p_test = np.asarray(p_test, dtype=np.float64)
    vt = _valid(y_test, valid_test)
    thresholds = choose_thresholds(y_val, p_val, names, valid_val, method)
    cis, macro_ci = bootstrap_auroc(y_test, p_test, names, vt, n_boot=n_boot, ci=ci, seed=seed)
    per: dict[str, dict[str, Any]] = {}
    curve_data: dict[str, Any] = {}
    for j, name in enumerate(names):
        yy, pp = y_test[vt[:, j], j], p_test[vt[:, j], j]
        entry: dict[str, Any] = {
            "auroc": auroc(yy, pp),
            "auroc_ci": cis[name],
            "auprc": auprc(yy, pp),
            "threshold": thresholds[name],
            "ece": expected_calibration_error(yy, pp, ece_bins),
            "positives": int(yy.sum()),
            "negatives": int(len(yy) - yy.sum()),
        }
        entry.update(binary_metrics(yy, pp, thresholds[name]))
        per[name] = entry
        curve_data[name] = curves(yy, pp)
    all_valid = vt
    summary = {
        "auroc": macro({n: per[n]["auroc"] for n in names}),
        "auroc_ci": macro_ci,
        "auprc": macro({n: per[n]["auprc"] for n in names}),
        "f1": macro({n: per[n]["f1"] for n in names if per[n]["positives"] > 0}),
        "sensitivity": macro({n: per[n]["sensitivity"] for n in names}),
        "specificity": macro({n: per[n]["specificity"] for n in names}),
        "ece": expected_calibration_error(y_test[all_valid], p_test[all_valid], ece_bins),
        "defined_auroc": sum(per[n]["auroc"] is not None for n in names),
    }
    return {"per_abnormality": per, "macro": summary, "curves": curve_data, "thresholds": thresholds}
