"""Unenhanced aorta: each tracked section re-centred on its own fat boundary, and the fitted tube followed on.

Rays cast from a section's centre stop where the HU profile falls into fat, at dense bone or outside the
mediastinal space; rays that run on through a touching organ (unenhanced blood has the density of the
heart and the esophagus) find no boundary within reach of the tube's radius and are dropped; a circle of
the tube's one radius is fitted to the rest.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.hu import DENSE_HU
from exact_ct.masks.morph import Spacing, disc_mm
from exact_ct.masks.rays import RayFan, fit_centre, fit_circle, ray_ends
from exact_ct.masks.tubes import Chain

#: Rays per section (every 15 degrees).
N_RAYS = 24
#: Sampling step along a ray (mm).
RAY_STEP_MM = 0.5
#: A ray is followed up to this many times the tube's radius: beyond, it ran through a touching organ.
RAY_REACH = 1.6
#: Fewest boundary points for a circle fit (a neighbour may cover up to half the circumference).
MIN_POINTS = 8
#: The rays cast around a section.
FAN = RayFan(n_rays=N_RAYS, dense_hu=DENSE_HU, min_points=MIN_POINTS, step_mm=RAY_STEP_MM)
#: A section followed beyond the track must be at least this fraction soft tissue (the heart counts: its
#: regrowth takes a touching descending aorta, and beside the vertebral body there is no heart; a limit of
#: 30 % heart had stopped synthetic study 28's tube 10 slices above its end).
TISSUE_SHARE = 0.8
#: Window (slices) of the running median of the re-centred centres along z.
SMOOTH_SLICES = 5
#: Extension beyond the track: slices without a fit before it ends.
EXTEND_MISSED = 1
#: Directions (+1 up, -1 down) in which the fitted tube is followed beyond the track.
EXTEND_DIRECTIONS = (-1,)


def fit_free(
    hu: np.ndarray,
    stop: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    spacing: Spacing,
    fat_hu: float,
) -> tuple[float, float, float] | None:
    """Least-squares circle (centre mm, radius) through the free boundary around ``centre``, or None."""
    px, py = ray_ends(hu, stop, centre, RAY_REACH * radius, spacing, fat_hu, FAN)
    if px.size < MIN_POINTS:
        return None
    return fit_circle(px, py)


def fit_fixed(
    hu: np.ndarray,
    stop: np.ndarray,
    start: tuple[float, float],
    radius: float,
    spacing: Spacing,
    fat_hu: float,
) -> tuple[float, float] | None:
    """Centre (mm) of the circle of ``radius`` through the section's free boundary near ``start``.

    :func:`exact_ct.masks.rays.fit_centre` with rays up to ``RAY_REACH`` x ``radius`` (points beyond are
    left out). None where too few rays find a boundary or the centre leaves the section (moves more than
    the radius).
    """
    return fit_centre(FAN, hu, stop, start, radius, RAY_REACH * radius, spacing, fat_hu)


def smooth_fill(chain: dict[int, tuple[float, float, float]], size: int = SMOOTH_SLICES) -> Chain:
    """Centres interpolated over bridged slices, then a running median along z (voxel indices out)."""
    zs = np.array(sorted(chain))
    full = np.arange(zs[0], zs[-1] + 1)
    cols = [np.interp(full, zs, [chain[z][k] for z in zs]) for k in range(3)]
    k = min(size, len(full) // 2 * 2 + 1)
    cols = [ndimage.median_filter(c, size=k, mode="nearest") for c in cols]
    return {int(z): (int(round(x)), int(round(y)), float(r)) for z, x, y, r in zip(full, *cols, strict=True)}


def recentre(
    hu: np.ndarray,
    stop: np.ndarray,
    chain: Chain,
    spacing: Spacing,
    fat_hu: float,
    radius_range: tuple[float, float],
) -> tuple[dict[int, tuple[float, float, float]], float]:
    """Each section of ``chain`` re-centred on its fat boundary with one radius for the tube (mm out).

    The radius is the median of the free circle fits (clipped to ``radius_range``), or the track's
    median distance-map radius where no free fit succeeds. A slice whose fit fails keeps its centre.
    """
    free = []
    for z, (cx, cy, r) in chain.items():
        f = fit_free(hu[:, :, z], stop[:, :, z], (cx * spacing[0], cy * spacing[1]), r, spacing, fat_hu)
        if f is not None and radius_range[0] <= f[2] <= radius_range[1]:
            free.append(f[2])
    r_track = float(np.median([c[2] for c in chain.values()]))
    radius = float(np.median(free)) if len(free) >= 3 else r_track
    out: dict[int, tuple[float, float, float]] = {}
    for z, (cx, cy, _) in chain.items():
        start = (cx * spacing[0], cy * spacing[1])
        c = fit_fixed(hu[:, :, z], stop[:, :, z], start, radius, spacing, fat_hu)
        out[z] = (*(c if c is not None else start), radius)
    return out, radius


def extend(
    hu: np.ndarray,
    stop: np.ndarray,
    tissue: np.ndarray,
    fits: dict[int, tuple[float, float, float]],
    spacing: Spacing,
    fat_hu: float,
    step_mm: float,
) -> dict[int, tuple[float, float, float]]:
    """The fitted tube followed beyond its ends (``EXTEND_DIRECTIONS``), slice by slice (centres in mm).

    The next slice's circle is fitted from the last centre with the tube's radius; it is taken while it
    moves at most ``step_mm`` and its disc is at least ``TISSUE_SHARE`` soft tissue (an arch turning
    forwards or the hiatus end the round section).
    """
    out = dict(fits)
    nz = hu.shape[2]
    for direction in EXTEND_DIRECTIONS:
        z = max(out) if direction > 0 else min(out)
        cx, cy, radius = out[z]
        missed = 0
        z += direction
        while 0 <= z < nz and missed <= EXTEND_MISSED:
            c = fit_fixed(hu[:, :, z], stop[:, :, z], (cx, cy), radius, spacing, fat_hu)
            ok = c is not None and np.hypot(c[0] - cx, c[1] - cy) <= step_mm * (1 + missed)
            if ok:
                disc = disc_mm(hu.shape, c, radius, spacing)  # type: ignore[arg-type]
                n = max(int(disc.sum()), 1)
                ok = tissue[:, :, z][disc].sum() >= TISSUE_SHARE * n
            if not ok:
                missed += 1
                z += direction
                continue
            cx, cy = c  # type: ignore[misc]
            out[z] = (cx, cy, radius)
            missed = 0
            z += direction
    return out
