"""Esophagus as a disc of fixed size: the unenhanced aorta's shape prior, and the esophagus in the neck."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.morph import Spacing, disc_mm
from exact_ct.masks.steps.esophagus import WALL_GAP_MM, nearest_seed, non_fat
from exact_ct.masks.steps.spine import SpineLine


def esophagus_disc(cand: np.ndarray, spine: SpineLine, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """Tube in front of the spine, behind the trachea: a disc of ``esophagus_radius_mm`` per slice.

    ``cand``: the mediastinal region's voxels that may be esophagus (soft tissue or luminal air, not
    airway: :func:`exact_ct.masks.steps.esophagus.non_fat`). The disc's centre in each slice is the
    ``cand`` voxel closest to the expected position: behind the trachea where there is one, else
    ``radius + 4 mm`` in front of the vertebral body, following the centre of the slice above (it drifts
    left towards the hiatus). A shape prior, not a segmentation of its wall.
    """
    out = np.zeros_like(cand)
    if not cand.any() or not spine.has.any():
        return out
    has, x_c, y_f = spine.has, spine.x_c, spine.y_f
    r = cfg.esophagus_radius_mm
    prev: tuple[float, float] | None = None
    for z in np.flatnonzero(cand.any(axis=(0, 1)) & has)[::-1]:
        seed = nearest_seed(cand[:, :, z], (x_c[z], y_f[z]), prev, r, spacing)
        if seed is None:
            continue
        px, py = seed
        disc = disc_mm(cand.shape, (px, py), r, spacing)
        sl = disc & cand[:, :, z]
        if sl.any():
            sx, sy = np.nonzero(sl)
            prev = (float(sx.mean() * spacing[0]), float(sy.mean() * spacing[1]))
        out[:, :, z] = sl
    return out


def esophagus_neck(
    hu: np.ndarray,
    esophagus: np.ndarray,
    airway: np.ndarray,
    allowed: np.ndarray,
    spacing: Spacing,
    cfg: IntensityConfig,
) -> np.ndarray:
    """The esophagus above its highest slice found in the mediastinal space: a disc behind the trachea.

    In the neck and thoracic inlet the esophagus lies between the trachea and the spine, against the
    trachea's back wall: its centre is ``esophagus_radius_mm + 4 mm`` behind the airway's most posterior
    voxel, at the airway's x centre. Non-fat voxels (or luminal air) of ``allowed`` in that disc, with
    in-slice holes filled.
    """
    out = np.zeros_like(esophagus)
    zs = np.flatnonzero(esophagus.any(axis=(0, 1)))
    if zs.size == 0:
        return out
    r = cfg.esophagus_radius_mm
    cand = non_fat(hu, allowed, airway, cfg)
    for z in range(int(zs[-1]) + 1, hu.shape[2]):
        ax, ay = np.nonzero(airway[:, :, z])
        if ax.size == 0:
            break
        cx, cy = float(ax.mean()) * spacing[0], float(ay.min()) * spacing[1] - (r + WALL_GAP_MM)
        disc = disc_mm(hu.shape, (cx, cy), r, spacing)
        # as in the mediastinal fit: the ring between the air lumen and the wall is dark by partial
        # volume (synthetic esophagus 0.783 -> 0.785 over studies 0-39, 8 studies up, none down)
        out[:, :, z] = (
            ndimage.binary_fill_holes(disc & cand[:, :, z]) & disc & allowed[:, :, z] & ~airway[:, :, z]
        )
    return out
