"""Boundary of a round soft-tissue section from rays cast in one slice, and circle fits to it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from exact_ct.masks.morph import Spacing


@dataclass(frozen=True)
class RayFan:
    """How a step casts rays around a section in one slice (:func:`ray_ends`).

    ``min_points``: the fewest ray ends its circle fits take (:func:`fit_centre`; a circle through fewer
    than three points is undetermined).
    """

    n_rays: int
    dense_hu: float
    step_mm: float = 0.5
    skip_mm: float = 0.0
    min_points: int = 3


def ray_ends(
    hu: np.ndarray,
    stop: np.ndarray,
    centre: tuple[float, float],
    reach_mm: float,
    spacing: Spacing,
    fat_hu: float,
    fan: RayFan,
    dense_edge: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Boundary points (mm) of a soft-tissue section around ``centre`` (mm) in one slice, along rays.

    Each of ``fan.n_rays`` rays is sampled every ``fan.step_mm`` (linear interpolation) and ends at the
    first sample darker than ``fat_hu`` (beyond ``fan.skip_mm``: a dark lumen near the centre is not the
    edge), denser than ``fan.dense_hu`` or inside ``stop``; the boundary lies half a step before it. A
    ray that finds no end within ``reach_mm`` ran on through a touching organ of the same density and is
    dropped.
    With ``dense_edge`` (a mask of the slice), a ray that ends at a dense sample outside it is dropped
    too: it ran through tissue of the section's density into bone, which is not the section's wall.
    Against a neighbour much darker than fat (lung, air) the wall lies where the profile crosses half
    way between the section's own level and the neighbour's (:func:`_half_max_edge`).
    Used by the esophagus and the unenhanced aorta, whose sections touch each other without an edge.
    """
    n_rays, dense_hu, step_mm, skip_mm = fan.n_rays, fan.dense_hu, fan.step_mm, fan.skip_mm
    angles = np.linspace(0.0, 2 * np.pi, n_rays, endpoint=False)
    steps = np.arange(step_mm, reach_mm + 1e-6, step_mm)
    xs = centre[0] + np.cos(angles)[:, None] * steps
    ys = centre[1] + np.sin(angles)[:, None] * steps
    coords = np.stack([xs / spacing[0], ys / spacing[1]])
    vals = ndimage.map_coordinates(hu, coords, order=1, mode="nearest")
    blocked = ndimage.map_coordinates(stop.view(np.uint8), coords, order=0, mode="constant", cval=1) > 0
    end = ((vals < fat_hu) & (steps[None, :] > skip_mm)) | (vals > dense_hu) | blocked
    hit = end.any(axis=1)
    first = np.argmax(end, axis=1)
    i = np.arange(n_rays)
    if dense_edge is not None:
        at_dense = vals[i, first] > dense_hu
        edge = (
            ndimage.map_coordinates(dense_edge.view(np.uint8), coords[:, i, first], order=0, mode="constant")
            > 0
        )
        hit &= ~(at_dense & ~edge)
    r = steps[first] - 0.5 * step_mm
    r = _half_max_edge(vals, steps, step_mm, first, hit & ~blocked[i, first], fat_hu, skip_mm, r)
    return centre[0] + np.cos(angles[hit]) * r[hit], centre[1] + np.sin(angles[hit]) * r[hit]


#: Beyond a ray's first dark sample, the neighbour's level is the darkest sample within this reach (mm).
EDGE_WINDOW_MM = 3.0


def _half_max_edge(
    vals: np.ndarray,
    steps: np.ndarray,
    step: float,
    first: np.ndarray,
    dark_end: np.ndarray,
    fat_hu: float,
    skip_mm: float,
    r: np.ndarray,
) -> np.ndarray:
    """Ray ends ``r`` (mm) moved to the half-maximum crossing where the neighbour is darker than fat.

    The fat threshold lies about half way between soft tissue (~40 HU) and fat (~-100 HU), so against fat
    the first sample below it is the wall. Against lung (-850 HU) or air it is not: the scanner's blur and
    partial volume darken the section's outermost voxel below the fat threshold, and the end fell about one
    voxel inside the wall (2-3 mm at a 3 mm grid, measured on the descending aorta beside the left lung).
    There the wall is where the profile crosses the mean of the section's
    level (the samples before the end, beyond ``skip_mm``) and the neighbour's (the darkest sample within
    ``EDGE_WINDOW_MM`` beyond it), interpolated between samples: the usual half-maximum edge.
    """
    n_rays, n_samples = vals.shape
    i = np.arange(n_rays)
    window = np.clip(
        first[:, None] + np.arange(int(round(EDGE_WINDOW_MM / step)) + 1)[None, :], 0, n_samples - 1
    )
    beyond = np.take_along_axis(vals, window, axis=1)
    outer = beyond.min(axis=1)
    inside = (np.arange(n_samples)[None, :] < first[:, None]) & (steps[None, :] > skip_mm)
    n_in = inside.sum(axis=1)
    inner = np.where(n_in > 0, (vals * inside).sum(axis=1) / np.maximum(n_in, 1), vals[:, 0])
    level = 0.5 * (inner + outer)
    moved = dark_end & (vals[i, first] < fat_hu) & (level < fat_hu) & (inner > level)
    if not moved.any():
        return r
    j = np.take_along_axis(window, np.argmax(beyond < level[:, None], axis=1)[:, None], axis=1)[:, 0]
    jp = np.maximum(j - 1, 0)
    v0, v1 = vals[i, jp], vals[i, j]
    frac = np.clip((v0 - level) / np.maximum(v0 - v1, 1e-6), 0.0, 1.0)
    edge = np.where(j > 0, steps[jp] + frac * step, steps[0])
    return np.where(moved, edge, r)


def fit_circle(px: np.ndarray, py: np.ndarray) -> tuple[float, float, float]:
    """Least-squares (algebraic, Kasa) circle through points: (centre x, centre y, radius)."""
    a = np.column_stack([px, py, np.ones_like(px)])
    b = px**2 + py**2
    (c0, c1, c2), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = 0.5 * c0, 0.5 * c1
    return float(cx), float(cy), float(np.sqrt(max(c2 + cx * cx + cy * cy, 0.0)))


def fit_centre(
    fan: RayFan,
    hu: np.ndarray,
    stop: np.ndarray,
    start: tuple[float, float],
    radius: float,
    reach_mm: float,
    spacing: Spacing,
    fat_hu: float,
    *,
    outlier: float | None = None,
    dense_edge: np.ndarray | None = None,
) -> tuple[float, float] | None:
    """Centre (mm) of the circle of known ``radius`` through the section's free boundary near ``start``.

    Three rounds, each casting ``fan``'s rays (:func:`ray_ends`, up to ``reach_mm``, with ``dense_edge``)
    from the current centre and taking five fixed-point steps ``c = mean(p - radius * (p - c) / |p - c|)``
    (least squares for a known radius). With ``outlier``, points farther than ``outlier`` x ``radius``
    from the current centre are another organ's boundary (reached through a contact) and are left out.
    None where fewer than ``fan.min_points`` boundary points are found (or, with ``outlier``, kept) or the
    centre leaves the section (moves more than the radius from ``start``).
    """
    c = np.array(start, dtype=float)
    for _ in range(3):
        px, py = ray_ends(hu, stop, (float(c[0]), float(c[1])), reach_mm, spacing, fat_hu, fan, dense_edge)
        pts = np.column_stack([px, py])
        if len(pts) < fan.min_points:
            return None
        for _ in range(5):
            v = pts - c
            d = np.hypot(v[:, 0], v[:, 1])
            keep = d > 1e-6
            if outlier is not None:
                keep &= d <= outlier * radius
                if keep.sum() < fan.min_points:
                    return None
            c = np.mean(pts[keep] - radius * v[keep] / d[keep, None], axis=0)
        if np.hypot(c[0] - start[0], c[1] - start[1]) > radius:
            return None
    return float(c[0]), float(c[1])
