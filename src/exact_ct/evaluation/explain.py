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
from typing import Any

import numpy as np

from exact_ct.evaluation.grounded import Finding, location_text
from exact_ct.io import atomic_path, comment_extension, save_label_map, save_nifti, write_label_tables
from exact_ct.schema import ABNORMALITIES, ORGAN_COLOURS, ORGANS, organ_labels

WINDOW_HU = (-1000.0, 400.0)


def save_maps(
    out_dir: str | os.PathLike[str], maps: np.ndarray, organs: np.ndarray, affine: np.ndarray
) -> tuple[Path, Path]:
    """Write ``anomaly_maps.nii.gz`` (x, y, z, 18 float32, schema order) and ``organs.nii.gz`` (uint8).

    The organ map carries its label names and colours in the header (TotalSegmentator's label-table
    extension, intent ``label``) and gets ``organs.ctbl`` (3D Slicer) and ``organs_itksnap.txt``
    (ITK-SNAP) next to it; the anomaly maps name their 18 components in a JSON comment extension
    (``{"components": [...]}``).
    """
    out = Path(out_dir)
    a, o = out / "anomaly_maps.nii.gz", out / "organs.nii.gz"
    if maps.shape[-1] != len(ABNORMALITIES) or maps.shape[:3] != organs.shape:
        raise ValueError(f"maps {maps.shape} / organs {organs.shape}: expected (x, y, z, 18) and (x, y, z)")
    components = {"components": list(ABNORMALITIES), "axis": 3, "values": "organ-confined anomaly map"}
    save_nifti(
        maps.astype(np.float32),
        affine,
        a,
        dtype=np.float32,
        extensions=[comment_extension(components)],
        descrip="EXACT-CT anomaly maps: 18 components named in the header extension",
    )
    save_label_map(organs, affine, o, organ_labels(), "EXACT-CT organ map")
    write_label_tables(out / "organs", organ_labels())
    return a, o


#: Map values below this share of the row's display maximum are left transparent (the CT shows through).
HEAT_FLOOR = 0.2


def _panel(
    ax: Any, ct: np.ndarray, org: np.ndarray, heat: np.ndarray, aspect: float, title: str, vmax: float
) -> Any:
    """One slice: arrays are (first, second) = (x, y) for axial, (x, z) for coronal. Returns the heat image."""
    lo, hi = WINDOW_HU
    ax.imshow(
        np.clip(ct.T, lo, hi),
        cmap="gray",
        vmin=lo,
        vmax=hi,
        origin="lower",
        aspect=aspect,
        interpolation="nearest",
    )
    # The map is scaled to the row's own maximum (a weakly positive map stays visible) in a colour map
    # that reads over grey; the colour bar gives the scale in map units.
    h = np.ma.masked_less(heat.T, HEAT_FLOOR * vmax)
    image = ax.imshow(
        h,
        cmap="turbo",
        vmin=0.0,
        vmax=vmax,
        alpha=0.7,
        origin="lower",
        aspect=aspect,
        interpolation="nearest",
    )
    for oid, colour in ORGAN_COLOURS.items():
        if oid == 0:
            continue
        m = org.T == oid
        if m.any() and m.sum() < m.size:
            ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour], linewidths=0.8, origin="lower")
    # Radiological convention: RAS+ x grows towards the patient's right, shown on the viewer's left.
    ax.invert_xaxis()
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    for x, label, ha in ((0.02, "R", "left"), (0.98, "L", "right")):
        ax.text(x, 0.03, label, color="yellow", fontsize=9, weight="bold", transform=ax.transAxes, ha=ha)
    return image


def montage(
    path: str | os.PathLike[str],
    hu: np.ndarray,
    organs: np.ndarray,
    confined_maps: np.ndarray,
    affine: np.ndarray,
    findings: Sequence[Finding],
    probs: dict[str, float] | None = None,
    max_findings: int = 3,
    dpi: int = 110,
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
    import textwrap

    from matplotlib import patheffects
    from matplotlib.lines import Line2D

    fig = plt.figure(figsize=(8.0, 3.6 * len(rows) + 0.7), layout="constrained")
    subfigs = fig.subfigures(len(rows), 1, squeeze=False)[:, 0]
    for r, (a, (_i, j, k), title) in enumerate(rows):
        heat = confined_maps[..., a]
        vmax = float(max(np.max(heat), 1e-6))
        sub = subfigs[r]
        # The row's title spans both panels and wraps instead of being clipped.
        sub.suptitle(textwrap.fill(title, 90), fontsize=10, weight="bold")
        axes = sub.subplots(1, 2)
        image = _panel(
            axes[0],
            hu[:, :, k],
            organs[:, :, k],
            heat[:, :, k],
            spacing[1] / spacing[0],
            f"axial z={k + 1}",
            vmax,
        )
        _panel(
            axes[1],
            hu[:, j, :],
            organs[:, j, :],
            heat[:, j, :],
            spacing[2] / spacing[0],
            f"coronal y={j + 1}",
            vmax,
        )
        bar = sub.colorbar(image, ax=list(axes), shrink=0.8, pad=0.01)
        bar.set_label(f"{ABNORMALITIES[a]} map", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    outline = [patheffects.Stroke(linewidth=3.5, foreground="black"), patheffects.Normal()]  # white shows
    handles = [
        Line2D([], [], color=c, lw=2, label=ORGANS[oid], path_effects=outline)
        for oid, c in ORGAN_COLOURS.items()
        if oid != 0
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=5,
        fontsize=8,
        frameon=False,
        title="organ contours",
        title_fontsize=8,
    )
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(
            tmp, dpi=dpi, metadata={"Software": None}
        )  # no version string: bytes depend on the data only
    plt.close(fig)
    return out
