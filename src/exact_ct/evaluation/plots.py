"""Curve files for `dvc plots` (one CSV per abnormality) and the same curves as PNG (matplotlib Agg).

`dvc plots show` renders its HTML with a chart library from a CDN; the PNGs work offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from exact_ct.io import atomic_path, write_csv_atomic
from exact_ct.schema import ABNORMALITIES, slug


def write_curve_csvs(plots_dir: str | os.PathLike[str], curves: dict[str, Any]) -> list[Path]:
    """``roc/<slug>.csv`` (fpr, tpr) and ``pr/<slug>.csv`` (recall, precision) per defined abnormality.

    Stale files of abnormalities now undefined are removed (the stage fully rewrites its outs).
    """
    root = Path(plots_dir)
    written: list[Path] = []
    for kind, cols in (("roc", ("fpr", "tpr")), ("pr", ("recall", "precision"))):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        keep = set()
        for name in ABNORMALITIES:
            c = curves.get(name)
            if c is None:
                continue
            path = folder / f"{slug(name)}.csv"
            write_csv_atomic(path, pd.DataFrame({cols[0]: c[cols[0]], cols[1]: c[cols[1]]}))
            keep.add(path.name)
            written.append(path)
        for stale in folder.glob("*.csv"):
            if stale.name not in keep:
                stale.unlink()
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return path


def curve_pngs(
    fig_dir: str | os.PathLike[str], curves: dict[str, Any], per: dict[str, Any]
) -> dict[str, Path]:
    """``roc.png`` and ``pr.png`` with one line per defined abnormality (AUROC / AUPRC in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(fig_dir)
    cmap = plt.get_cmap("tab20")
    paths: dict[str, Path] = {}
    for kind, (xk, yk, metric, xl, yl) in {
        "roc": ("fpr", "tpr", "auroc", "1 - specificity", "sensitivity"),
        "pr": ("recall", "precision", "auprc", "recall", "precision"),
    }.items():
        fig, ax = plt.subplots(figsize=(7.5, 5.5))
        for i, name in enumerate(ABNORMALITIES):
            c = curves.get(name)
            if c is None:
                continue
            v = per[name][metric]
            ax.plot(c[xk], c[yk], color=cmap(i % 20), lw=1.2, label=f"{name} ({v:.2f})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"{kind.upper()} curves, test split")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        paths[kind] = _save(fig, out / f"{kind}.png")
    return paths


def calibration_png(path: str | os.PathLike[str], y: np.ndarray, p: np.ndarray, bins: int = 10) -> Path:
    """Reliability diagram over all valid (study, abnormality) pairs of the test split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y, float).ravel()
    p = np.asarray(p, float).ravel()
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    centres, rates, counts = [], [], []
    for b in range(bins):
        m = which == b
        if m.any():
            centres.append(float(p[m].mean()))
            rates.append(float(y[m].mean()))
            counts.append(int(m.sum()))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
    ax.plot(centres, rates, marker="o")
    for c, r, n in zip(centres, rates, counts, strict=True):
        ax.annotate(str(n), (c, r), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed positive rate")
    ax.set_title("Calibration (test split)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    return _save(fig, Path(path))
