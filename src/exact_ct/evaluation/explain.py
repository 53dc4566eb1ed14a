"""Explanations of one study: maps on the canonical grid as NIfTI, and a PNG montage through each finding.

The montage shows, for each positive finding (highest probability first), an axial and a coronal slice
through the finding's peak: the CT in a soft-tissue/lung window, organ contours, and the organ-confined
anomaly map as a heat overlay. Axial panels follow the radiological convention (patient's right on the
viewer's left, anterior up).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from exact_ct.evaluation.grounded import Finding, location_text
from exact_ct.io import atomic_path, save_nifti
from exact_ct.schema import ABNORMALITIES

#: Organ contour colours (ids 1-9), chosen to stay distinct over a grey CT and a hot heat map.
ORGAN_COLOURS = {
    1: "#4fc3f7",
    2: "#0288d1",
    3: "#aed581",
    4: "#ba68c8",
    5: "#e57373",
    6: "#ffd54f",
    7: "#a1887f",
    8: "#90a4ae",
    9: "#ffffff",
}
WINDOW_HU = (-1000.0, 400.0)


def save_maps(
    out_dir: str | os.PathLike[str], maps: np.ndarray, organs: np.ndarray, affine: np.ndarray
) -> tuple[Path, Path]:
    """Write ``anomaly_maps.nii.gz`` (x, y, z, 18 float32, schema order) and ``organs.nii.gz`` (uint8)."""
    out = Path(out_dir)
    a, o = out / "anomaly_maps.nii.gz", out / "organs.nii.gz"
    if maps.shape[-1] != len(ABNORMALITIES) or maps.shape[:3] != organs.shape:
        raise ValueError(f"maps {maps.shape} / organs {organs.shape}: expected (x, y, z, 18) and (x, y, z)")
    save_nifti(maps.astype(np.float32), affine, a, dtype=np.float32)
    save_nifti(organs, affine, o, dtype=np.uint8)
    return a, o


def _panel(ax: object, ct: np.ndarray, org: np.ndarray, heat: np.ndarray, aspect: float, title: str) -> None:
    """One slice: arrays are (first, second) = (x, y) for axial, (x, z) for coronal."""
    lo, hi = WINDOW_HU
    ax.imshow(
        np.clip(ct.T, lo, hi),
        cmap="gray",
        vmin=lo,
        vmax=hi,
        origin="lower",
        aspect=aspect,
        interpolation="nearest",
    )  # type: ignore[attr-defined]
    h = np.ma.masked_less(heat.T, 0.05)
    ax.imshow(
        h,
        cmap="inferno",
        vmin=0.0,
        vmax=1.0,
        alpha=0.55,
        origin="lower",
        aspect=aspect,
        interpolation="nearest",
    )  # type: ignore[attr-defined]
    for oid, colour in ORGAN_COLOURS.items():
        m = org.T == oid
        if m.any() and m.sum() < m.size:
            ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour], linewidths=0.6, origin="lower")  # type: ignore[attr-defined]
    # Radiological convention: RAS+ x grows towards the patient's right, shown on the viewer's left.
    ax.invert_xaxis()  # type: ignore[attr-defined]
    ax.set_title(title, fontsize=7)  # type: ignore[attr-defined]
    ax.set_xticks([])  # type: ignore[attr-defined]
    ax.set_yticks([])  # type: ignore[attr-defined]
    # Mark the patient's right (left edge of the image after the inversion above).
    ax.text(0.02, 0.02, "R", color="white", fontsize=6, transform=ax.transAxes, ha="left")  # type: ignore[attr-defined]


def montage(
    path: str | os.PathLike[str],
    hu: np.ndarray,
    organs: np.ndarray,
    confined_maps: np.ndarray,
    affine: np.ndarray,
    findings: Sequence[Finding],
    probs: dict[str, float] | None = None,
    max_findings: int = 3,
    dpi: int = 90,
) -> Path:
    """PNG montage: one row per positive finding (axial + coronal through its peak).

    With no positive finding, one row through the peak of the most probable abnormality, titled as
    below threshold, so a reader always sees what the model looked at.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    rows: list[tuple[int, tuple[int, int, int], str]] = []
    for f in list(findings)[:max_findings]:
        rows.append(
            (
                ABNORMALITIES.index(f.abnormality),
                f.peak_voxel,
                f"{f.abnormality} p={f.probability:.2f} | {location_text(f)}",
            )
        )
    if not rows:
        a = int(np.argmax([probs[n] for n in ABNORMALITIES])) if probs else 0
        peak = tuple(
            int(v) for v in np.unravel_index(int(np.argmax(confined_maps[..., a])), confined_maps.shape[:3])
        )
        p = f" p={probs[ABNORMALITIES[a]]:.2f}" if probs else ""
        rows.append((a, peak, f"no finding above threshold; top: {ABNORMALITIES[a]}{p}"))  # type: ignore[arg-type]
    fig, axes = plt.subplots(len(rows), 2, figsize=(6.4, 3.0 * len(rows)), squeeze=False)
    for r, (a, (_i, j, k), title) in enumerate(rows):
        heat = confined_maps[..., a]
        _panel(
            axes[r][0],
            hu[:, :, k],
            organs[:, :, k],
            heat[:, :, k],
            spacing[1] / spacing[0],
            f"{title}\naxial z={k + 1}",
        )
        _panel(
            axes[r][1],
            hu[:, j, :],
            organs[:, j, :],
            heat[:, j, :],
            spacing[2] / spacing[0],
            f"coronal y={j + 1}",
        )
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(
            tmp, dpi=dpi, metadata={"Software": None}
        )  # no version string: bytes depend on the data only
    plt.close(fig)
    return out
