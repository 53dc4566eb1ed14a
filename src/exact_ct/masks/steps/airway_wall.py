"""Airway wall at sub-voxel precision: each section of the tracked lumen fitted by an ellipse and grown by the wall."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.hu import AIR_HU, WATER_HU
from exact_ct.masks.morph import CROSS_2D, Spacing

#: Adult trachea and main bronchi: wall about 1-3 mm thick, typically 1.5 mm.
WALL_MM = 1.5
#: A section is an ellipse when at least this share of its lumen voxels lies inside the fitted ellipse.
_ELLIPSE_FIT_MIN = 0.9


def airway_with_wall(
    lumen: np.ndarray,
    hu: np.ndarray,
    air: np.ndarray,
    spacing: Spacing,
    wall_mm: float = WALL_MM,
) -> np.ndarray:
    """Trachea and main bronchi including their wall: voxels whose centre lies inside the outer wall.

    A voxel of the airway's wall is mostly soft tissue, so HU alone cannot tell it from the mediastinal
    fat or vessel beside it, and the thin wall is never resolved at a 3 mm grid: the airway is instead
    drawn geometrically from the lumen, which is. Each in-slice section of the tracked lumen (trachea,
    or one main bronchus) is a tube's cut: an ellipse, a circle for the upright trachea, elongated by
    1/cos(tilt) for an oblique bronchus. Its area is the sum of the air fraction of the voxels in and
    around it (partial volume between ``AIR_HU`` and ``WATER_HU``: a blurred or block-averaged edge
    keeps the sum, so the area is exact to well under a voxel), its centre the fraction-weighted
    centroid and its shape (axis ratio, orientation) the weighted second moments. The outer wall of an
    oblique tube of radius ``b`` (the ellipse's minor semi-axis) is the lumen ellipse scaled by
    ``(b + wall_mm) / b``; voxels whose centre lies inside it are airway. A section that is not an
    ellipse (the carina, where trachea and bronchi merge) is grown by ``wall_mm`` plus half a voxel.

    Args:
        lumen: tracked airway lumen (air voxels), bool (x, y, z).
        hu: the CT volume in HU on the same grid.
        air: every air voxel (lumen, lung): only the lumen's own air counts towards its area.
        spacing: voxel size (mm).
        wall_mm: airway wall thickness.

    Returns:
        The airway (lumen and wall), a superset of ``lumen``.
    """
    out = lumen.copy()
    px = (float(spacing[0]), float(spacing[1]))
    reach = int(np.ceil(2.0 * wall_mm / min(px))) + 2
    for z in np.flatnonzero(lumen.any(axis=(0, 1))):
        lab, n = ndimage.label(lumen[:, :, z], structure=CROSS_2D)
        for k, box in enumerate(ndimage.find_objects(lab), start=1):
            # a window around the section, wide enough for the scaled ellipse of an oblique bronchus
            w = tuple(
                slice(max(b.start - reach, 0), min(b.stop + reach, s))
                for b, s in zip(box, lab.shape, strict=True)
            )
            sec = lab[w] == k
            grown = _section_with_wall(
                sec, np.asarray(hu[w + (z,)], dtype=np.float64), air[w + (z,)], px, wall_mm
            )
            out[w + (z,)] |= grown
    return out


def _section_with_wall(
    sec: np.ndarray, hu: np.ndarray, air: np.ndarray, px: tuple[float, float], wall_mm: float
) -> np.ndarray:
    """One lumen section (2-D window) grown to its outer wall, by an ellipse fit or a distance fallback."""
    frac = np.clip((WATER_HU - hu) / (WATER_HU - AIR_HU), 0.0, 1.0)
    # the section and its one-voxel rim, where its partial volume lies; other air (lung) is not lumen
    rim = ndimage.binary_dilation(sec, structure=CROSS_2D) & (sec | ~air)
    weight = np.where(rim, frac, 0.0)
    total = float(weight.sum())
    if total <= 0.0:
        return sec
    xs = (np.arange(sec.shape[0]) * px[0])[:, None]
    ys = (np.arange(sec.shape[1]) * px[1])[None, :]
    cx, cy = float((weight * xs).sum()) / total, float((weight * ys).sum()) / total
    dx, dy = xs - cx, ys - cy
    cov = (
        np.array(
            [
                [(weight * dx * dx).sum(), (weight * dx * dy).sum()],
                [(weight * dx * dy).sum(), (weight * dy * dy).sum()],
            ]
        )
        / total
    )
    evals, evecs = np.linalg.eigh(cov)
    area = total * px[0] * px[1]
    ratio = float(np.sqrt(max(evals[1], 1e-6) / max(evals[0], 1e-6)))
    minor = float(np.sqrt(area / (np.pi * ratio)))
    # coordinates along the major (u) and minor (v) axis, in units of the semi-axes
    u = (dx * evecs[0, 1] + dy * evecs[1, 1]) / (ratio * minor)
    v = (dx * evecs[0, 0] + dy * evecs[1, 0]) / minor
    rho = np.sqrt(u * u + v * v)
    # a lumen voxel beyond the ellipse (by more than half a voxel) means the section is not an ellipse
    half_vox = 0.5 * min(px) / minor
    if float((rho[sec] <= 1.0 + half_vox).mean()) >= _ELLIPSE_FIT_MIN:
        return sec | (rho <= (minor + wall_mm) / minor)
    dist = ndimage.distance_transform_edt(~sec, sampling=px)
    return sec | (dist <= wall_mm + 0.5 * min(px))
