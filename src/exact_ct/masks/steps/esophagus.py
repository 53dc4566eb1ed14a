"""Esophagus: a tube in front of the spine, fitted as a circle per axial slice.

The thoracic esophagus is a round soft-tissue tube (often with a small central air lumen) lying on the
prevertebral tissue in front of the vertebral bodies, behind the trachea and right of / against the
descending aorta, surrounded elsewhere by mediastinal fat. Its section is located slice by slice (a
seed near the expected point, following the slice above as it drifts left to the hiatus) and then
fitted as a circle to its *own* boundary: rays cast from the seed stop where the HU profile crosses into
fat (or air), bone or the airway, and a least-squares circle through those end points gives centre and
radius. Rays that run on through the touching aorta (unenhanced blood has the esophagus's density:
no edge between them) find no boundary within reach and are left out, so the fit uses the free sides
only. Centre and radius are then smoothed along z (a tube changes slowly) and the section is the disc
of that radius, less fat and everything not allowed (a disc of fixed size centred on the nearest
non-fat voxel sat on the tube's near edge and was too small for a wide esophagus).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from exact_ct.masks.hu import CONTRAST_BLOOD_HU, DENSE_HU, LUMEN_AIR_HU, LUMEN_RIM_HU, SOFT_TISSUE_HU
from exact_ct.masks.morph import Spacing, disc_mm
from exact_ct.masks.rays import RayFan, fit_centre, fit_circle, ray_ends

if TYPE_CHECKING:
    from exact_ct.masks.config import IntensityConfig
    from exact_ct.masks.steps.spine import SpineLine

#: Rays cast from the seed per slice (every 22.5 degrees).
N_RAYS = 16
#: Rays are followed this far (mm): beyond it a ray ran through a touching organ (the aorta).
RAY_REACH_MM = 22.0
#: Sampling step along a ray (mm).
RAY_STEP_MM = 0.5
#: Within this distance of the seed a dark sample is the air lumen, not the fat around the tube.
LUMEN_MM = 3.5
#: Physiological radius of the (collapsed or slightly distended) esophagus, mm.
RADIUS_MM = (5.0, 13.0)
#: A slice's fitted radius is clipped to this range around the tube's median (one tube varies little).
RADIUS_SPREAD = (0.8, 1.2)
#: A boundary point farther than this many times the median ray is another organ's boundary.
RAY_OUTLIER = 1.5
#: Fewest boundary points for a circle fit.
MIN_POINTS = 6
#: The rays cast from a seed or centre (a dark sample within ``LUMEN_MM`` is the air lumen).
FAN = RayFan(n_rays=N_RAYS, dense_hu=DENSE_HU, min_points=MIN_POINTS, step_mm=RAY_STEP_MM, skip_mm=LUMEN_MM)
#: Window (slices) of the running median of centre and radius along z.
SMOOTH_SLICES = 5
#: Air in a hollow organ's lumen (darker than ``LUMEN_AIR_HU``) is at most this large in one slice (the
#: esophageal lumen; bowel gas or lung is larger).
LUMEN_MAX_MM2 = 40.0
_SLICE_8 = np.zeros((3, 3, 3), dtype=bool)
_SLICE_8[:, :, 1] = True
#: The tube's centre lies its radius plus this (mm) in front of the vertebral body or behind the trachea.
WALL_GAP_MM = 4.0


def fit_section(
    hu: np.ndarray,
    stop: np.ndarray,
    seed: tuple[float, float],
    spacing: Spacing,
    fat_hu: float,
    blood: np.ndarray,
) -> tuple[float, float, float] | None:
    """Centre (mm) and radius of the tube's section around ``seed``, or None where the fit fails.

    Two rounds: the first from the seed (which may lie on the tube's near edge), the second from the
    first fit's centre. Boundary points beyond ``RAY_OUTLIER`` x the median distance are dropped
    (another organ's far side reached through a contact).

    The boundary points come from ``N_RAYS`` rays up to ``RAY_REACH_MM`` (:func:`exact_ct.masks.rays.ray_ends`);
    a dark sample within ``LUMEN_MM`` of the seed is the air lumen, not the fat around the tube. A ray that
    ends at dense bone is dropped: the prevertebral tissue (longus colli, ligament, fascia) lies between the
    esophagus and the vertebral body, so the ray ran through it. Only enhanced blood (``blood``: the contrast
    aorta's lumen in this slice, all False without contrast) is a dense wall of the tube.
    """
    centre = seed
    fit: tuple[float, float, float] | None = None
    for _ in range(2):
        px, py = ray_ends(hu, stop, centre, RAY_REACH_MM, spacing, fat_hu, FAN, blood)
        if px.size < MIN_POINTS:
            return fit
        d = np.hypot(px - centre[0], py - centre[1])
        keep = d <= RAY_OUTLIER * float(np.median(d))
        if keep.sum() < MIN_POINTS:
            return fit
        cx, cy, r = fit_circle(px[keep], py[keep])
        # the fit may not leave the seed's neighbourhood: a wrong fit is worse than the seed
        if not (RADIUS_MM[0] <= r <= RADIUS_MM[1]) or np.hypot(cx - seed[0], cy - seed[1]) > RADIUS_MM[1]:
            return fit
        fit = (cx, cy, r)
        centre = (cx, cy)
    return fit


def non_fat(hu: np.ndarray, mask: np.ndarray, airway: np.ndarray, cfg: IntensityConfig) -> np.ndarray:
    """The voxels of ``mask`` that may be esophagus: soft tissue (above ``fat_hu_max``) or luminal air
    (below ``lung_hu_max``), not airway."""
    return mask & ((hu > cfg.fat_hu_max) | (hu < cfg.lung_hu_max)) & ~airway


def nearest_seed(
    cand: np.ndarray,
    spine_front: tuple[float, float],
    prev: tuple[float, float] | None,
    radius: float,
    spacing: Spacing,
) -> tuple[float, float] | None:
    """The esophagus's seed (mm) in one slice: the ``cand`` voxel nearest to its expected centre.

    Expected: ``radius + 4 mm`` in front of the vertebral body's front (``spine_front``: x centre and front
    y, voxel indices), averaged with the centre of the slice above (``prev``, mm) as the tube drifts left
    to the hiatus. None when no candidate lies within two radii of it.
    """
    ex, ey = spine_front[0] * spacing[0], spine_front[1] * spacing[1] + radius + WALL_GAP_MM
    if prev is not None:
        ex, ey = 0.5 * (ex + prev[0]), 0.5 * (ey + prev[1])
    cx, cy = np.nonzero(cand)
    if cx.size == 0:
        return None
    d2 = (cx * spacing[0] - ex) ** 2 + (cy * spacing[1] - ey) ** 2
    i = int(np.argmin(d2))
    if d2[i] > (2 * radius) ** 2:
        return None
    return float(cx[i] * spacing[0]), float(cy[i] * spacing[1])


def fill_lumen(hu: np.ndarray, region: np.ndarray, airway: np.ndarray, spacing: Spacing) -> np.ndarray:
    """``hu`` with small enclosed air pockets (a hollow organ's lumen) and their rim set to soft tissue.

    The esophagus's air lumen is a few mm across: at a 3 mm grid it is one dark voxel whose neighbours
    fall into the fat range by partial volume. A dark (< ``LUMEN_AIR_HU``) in-slice component of at most
    ``LUMEN_MAX_MM2``, not airway, whose 8-neighbour rim is on average soft tissue or brighter, is
    such a lumen (a fat gap is not: its rim is fat).
    """
    out = hu.copy()
    dark = region & (hu < LUMEN_AIR_HU) & ~airway
    if not dark.any():
        return out
    labels, n = ndimage.label(dark, structure=_SLICE_8)
    size = np.bincount(labels.ravel(), minlength=n + 1) * spacing[0] * spacing[1]
    small = size <= LUMEN_MAX_MM2
    small[0] = False
    keep = small[labels]
    if not keep.any():
        return out
    labels = np.where(keep, labels, 0)
    grown = ndimage.grey_dilation(labels, footprint=_SLICE_8)
    rim = (grown > 0) & (labels == 0)
    # the rim's mean per lumen: brighter than fat means soft tissue around it
    rim_sum = np.bincount(grown[rim], weights=hu[rim], minlength=n + 1)
    rim_n = np.bincount(grown[rim], minlength=n + 1)
    solid = rim_sum / np.maximum(rim_n, 1) > LUMEN_RIM_HU
    solid[0] = False
    pocket = solid[grown] & (grown > 0)
    out[pocket] = np.maximum(out[pocket], SOFT_TISSUE_HU)
    return out


def fit_esophagus(
    hu: np.ndarray,
    region: np.ndarray,
    spine: SpineLine,
    airway: np.ndarray,
    spacing: Spacing,
    cfg: IntensityConfig,
    aorta: np.ndarray | None = None,
) -> np.ndarray:
    """The esophagus in the mediastinal ``region`` (cropped box): fitted circles per slice, smoothed.

    ``aorta`` (contrast CT): the aorta found before. Its enhanced lumen is a boundary of the
    esophagus, and no seed lies in it; but its soft-tissue section (wall, thrombus) was grown round the
    lumen and takes the esophagus where the two touch: within the fitted circle, its voxels darker than
    enhanced blood (``CONTRAST_BLOOD_HU``) are the esophagus's.

    Seeds: the non-fat voxel (soft tissue or luminal air) nearest to the point
    ``esophagus_radius_mm + 4 mm`` in front of the vertebral body (the esophagus lies on the
    prevertebral tissue), averaged with the centre of the slice above (it drifts left to the hiatus).
    """
    out = np.zeros_like(region)
    # enhanced blood of the aorta is a wall of the tube; any other dense sample is bone (see fit_section)
    blood = np.zeros_like(region) if aorta is None else aorta & (hu >= CONTRAST_BLOOD_HU)
    seedable = region if aorta is None else region & ~aorta
    if aorta is not None:
        region = region | (aorta & (hu < CONTRAST_BLOOD_HU))
    cand = non_fat(hu, seedable, airway, cfg)
    if not cand.any() or not spine.has.any():
        return out
    has, x_c, y_f = spine.has, spine.x_c, spine.y_f
    r0 = cfg.esophagus_radius_mm
    stop = ~region | airway
    hu = fill_lumen(hu, region, airway, spacing)
    cand = non_fat(hu, seedable, airway, cfg)
    fits: dict[int, tuple[float, float, float]] = {}
    prev: tuple[float, float] | None = None
    for z in np.flatnonzero(cand.any(axis=(0, 1)) & has)[::-1]:
        seed = nearest_seed(cand[:, :, z], (x_c[z], y_f[z]), prev, r0, spacing)
        if seed is None:
            continue
        fit = fit_section(hu[:, :, z], stop[:, :, z], seed, spacing, cfg.fat_hu_max, blood[:, :, z])
        if fit is None:
            fit = (seed[0], seed[1], r0)
        fits[int(z)] = fit
        prev = (fit[0], fit[1])
    if not fits:
        return out
    zs = np.array(sorted(fits))
    arr = np.array([fits[z] for z in zs])
    k = min(SMOOTH_SLICES, len(zs) // 2 * 2 + 1)
    arr = ndimage.median_filter(arr, size=(k, 1), mode="nearest")
    # one tube: the radius varies little along it, a slice's fit that does not is an outlier
    r_med = float(np.median(arr[:, 2]))
    arr[:, 2] = np.clip(arr[:, 2], RADIUS_SPREAD[0] * r_med, RADIUS_SPREAD[1] * r_med)
    # second pass: one radius for the whole tube (a slice's own fit is noisy), the centre refitted with it
    for j, z in enumerate(zs):
        # points farther than RAY_OUTLIER x the radius are another organ's boundary, reached through a contact
        c = fit_centre(
            FAN,
            hu[:, :, z],
            stop[:, :, z],
            (arr[j, 0], arr[j, 1]),
            r_med,
            RAY_REACH_MM,
            spacing,
            cfg.fat_hu_max,
            outlier=RAY_OUTLIER,
            dense_edge=blood[:, :, z],
        )
        if c is not None:
            arr[j, 0], arr[j, 1] = c
        arr[j, 2] = r_med
    arr[:, :2] = ndimage.median_filter(arr[:, :2], size=(k, 1), mode="nearest")
    tissue = non_fat(hu, region, airway, cfg)
    for z, (px, py, r) in zip(zs, arr, strict=True):
        disc = disc_mm(region.shape, (px, py), r, spacing)
        sl = disc & tissue[:, :, z]
        # the ring between the air lumen and the wall is dark by partial volume: fill it
        out[:, :, z] = ndimage.binary_fill_holes(sl) & disc & region[:, :, z] & ~airway[:, :, z]
    return out
