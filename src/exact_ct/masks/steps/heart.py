"""Heart: the thick soft-tissue mass between the lungs, and its contrast-CT refinements (inferior wall, ventricles)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.hu import BLOOD_HU_MAX, lumen_threshold
from exact_ct.masks.morph import (
    Spacing,
    between,
    components_touching,
    depth_mm,
    dilate_mm,
    fill_holes_2d,
    hull_2d,
    inplane_distance,
    label_sums,
    largest_component,
)

#: A liver dome has lung directly above it: lung is looked for this far (mm) above the core's top
#: (beyond the core's erosion radius) ...
LUNG_ABOVE_MM = 20.0
#: ... and a core with lung above at least this share of its columns is not the heart.
LUNG_ABOVE_SHARE_MAX = 0.8
#: A heart core smaller than this (ml) is noise.
CORE_MIN_ML = 1.0
#: Myocardium of the heart's inferior wall around the enhanced blood pool's outline, at most.
MYOCARDIUM_MM = 8.0
#: The heart is followed at most this far under its lowest slice.
BELOW_FLOOR_MAX_MM = 60.0
#: The ventricles' wall (and pericardium) between the heart's blood pool and the lung, at most.
VENTRICLE_WALL_MM = 10.0
#: ... it lies against the lung: within this distance of it.
LUNG_CONTACT_MM = 6.0


def find_heart(tissue: np.ndarray, lungs: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """Largest thick soft-tissue mass between the lungs with lung on both sides of it.

    An erosion of ``heart_core_mm`` leaves only structures thicker than the great vessels; the largest
    core that has lung to its left and to its right (so never the liver dome below the lungs) is the
    heart, grown back within soft tissue (an opening restricted to that core).
    """
    empty = np.zeros_like(tissue)
    if not tissue.any():
        return empty
    depth = depth_mm(tissue, spacing, 2.0 * cfg.heart_core_mm)
    core = depth > cfg.heart_core_mm
    if not core.any():
        return empty
    labels, n = ndimage.label(core)
    index = np.arange(1, n + 1)
    sizes = label_sums(labels, n)[1:]
    # lung on both sides at the core's level: its x range lies inside the lungs' x range on that level
    ok = np.zeros(n + 1, dtype=bool)
    # A liver or spleen dome under the lung base also has lung to its left and right, but lung lies
    # directly above nearly all of it (the lung base sits on the dome); above the heart lie the great
    # vessels, and lung only where the upper lobes overhang it.
    above_mm = cfg.heart_core_mm + LUNG_ABOVE_MM
    k_up = max(1, int(round(above_mm / spacing[2])))
    for k, sl in zip(index, ndimage.find_objects(labels), strict=True):
        lz = lungs[:, :, sl[2]]
        lx = np.flatnonzero(lz.any(axis=(1, 2)))
        if lx.size and lx[0] < sl[0].start and lx[-1] >= sl[0].stop:
            ok[k] = (
                _lung_above_share(labels[sl[0], sl[1]] == k, lungs[sl[0], sl[1]], k_up) < LUNG_ABOVE_SHARE_MAX
            )
    if not ok.any():
        return empty
    best = index[ok[1:]][np.argmax(sizes[ok[1:]])]
    core = labels == best
    if core.sum() * np.prod(spacing) / 1000.0 < CORE_MIN_ML:
        return empty
    # The aortic root and pulmonary trunk (radius up to ~20 mm) keep a core at a fixed erosion radius and
    # come back with the heart. The erosion radius is scaled to this heart's own thickness (its deepest
    # voxel), so that in a large heart the great vessels' cores vanish, while a small heart keeps one.
    radius = max(
        cfg.heart_core_mm, min(cfg.heart_core_ratio * float(depth[core].max()), 2 * cfg.heart_core_mm)
    )
    if radius > cfg.heart_core_mm:
        core = components_touching(depth > radius, core)
    heart = dilate_mm(core, radius + max(spacing) * 0.5, spacing) & tissue
    heart = largest_component(heart)
    if heart.sum() * np.prod(spacing) / 1000.0 < cfg.heart_min_ml:
        return empty
    return fill_holes_2d(heart)


def _lung_above_share(core: np.ndarray, lungs: np.ndarray, k_up: int) -> float:
    """Share of the core's (x, y) columns with lung within ``k_up`` slices above the core's top voxel."""
    cols = core.any(axis=2)
    nz = core.shape[2]
    top = nz - 1 - np.argmax(core[:, :, ::-1], axis=2)  # highest core voxel per column
    z = np.arange(nz)[None, None, :]
    window = (z > top[:, :, None]) & (z <= top[:, :, None] + k_up)
    hit = (lungs & window).any(axis=2)
    return float(hit[cols].mean()) if cols.any() else 0.0


def heart_below_floor(
    hu: np.ndarray, heart: np.ndarray, tissue: np.ndarray, blood_hu: float, spacing: Spacing
) -> np.ndarray:
    """The lower part of a contrast-enhanced heart that the mediastinal floor cut off; the added voxels.

    The floor (lung on both sides) runs above the heart's inferior wall where the heart sits low on
    the diaphragm. Under the heart's lowest voxel of each (x, y) column, within the heart's axial
    footprint (it narrows towards the diaphragm and apex), the enhanced blood pool connected to the
    heart's own is the ventricles' and atria's lower part; the soft tissue (``tissue``) within
    ``MYOCARDIUM_MM`` of its convex outline in the slice is their wall. The liver and stomach under the
    heart are not enhanced like blood, so the growth stops at the diaphragm.
    """
    added = np.zeros_like(heart)
    zs = np.flatnonzero(heart.any(axis=(0, 1)))
    if zs.size == 0:
        return added
    bright = tissue & (hu >= lumen_threshold(blood_hu)) & (hu <= BLOOD_HU_MAX)
    seed = heart & bright
    if not seed.any():
        return added
    nz = heart.shape[2]
    foot = heart.any(axis=2)
    low = np.where(foot, np.argmax(heart, axis=2), 0)
    z = np.arange(nz)[None, None, :]
    z_min = max(int(zs[0]) - int(round(BELOW_FLOOR_MAX_MM / spacing[2])), 0)
    under = foot[:, :, None] & (z < low[:, :, None]) & (z >= z_min)
    cand = bright & under
    if not cand.any():
        return added
    blood = components_touching(cand | seed, seed) & cand
    if not blood.any():
        return added
    # The wall lies around the blood pools' convex outline (the septum inside it); the liver beside a
    # small blood pool (the inferior vena cava's entry) lies beyond it.
    near = inplane_distance(~hull_2d(blood), spacing) <= MYOCARDIUM_MM
    return (blood | (tissue & under & near)) & ~heart


def ventricle_wall(
    heart: np.ndarray, tissue: np.ndarray, lungs: np.ndarray, aorta: np.ndarray, spacing: Spacing
) -> np.ndarray:
    """Soft tissue between the ventricles and the lung that the heart's opening cut; the added voxels.

    The heart is regrown from its eroded core by up to 30 mm (an opening), which cuts the wedge of
    the apex and the left ventricle's lateral wall where the heart narrows against the lung. Below the
    aortic root (the lowest slice of ``aorta`` over the heart) the heart is the ventricles, whose wall
    is up to ``VENTRICLE_WALL_MM`` thick: ``tissue`` within that of the heart and within
    ``LUNG_CONTACT_MM`` of a lung that lies between heart and lung along its row (so never the posterior
    mediastinum behind the heart), connected to the heart, is taken. Above the root the atria and great
    vessels touch the lung too, so nothing is added there. Where a descending aorta lies behind the
    heart, its lowest slice over the heart's footprint is taken for the root and little is added.
    """
    empty = np.zeros_like(heart)
    over = aorta & heart.any(axis=2)[:, :, None]
    if not heart.any() or not over.any():
        return empty
    z_root = int(np.flatnonzero(over.any(axis=(0, 1)))[0])
    below = np.arange(heart.shape[2])[None, None, :] < z_root
    wall = tissue & below & ~heart & dilate_mm(heart, VENTRICLE_WALL_MM, spacing)
    wall &= dilate_mm(lungs, LUNG_CONTACT_MM, spacing)
    wall &= between(lungs, heart, axis=0) | between(heart, lungs, axis=0)
    return components_touching(wall | heart, heart) & wall
