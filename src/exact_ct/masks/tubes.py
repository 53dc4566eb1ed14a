"""Tubes followed slice by slice through in-plane distance maxima: centres and radii per axial slice."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.morph import Spacing, disc_mm

#: A tracked tube: slice index -> (x, y) centre (voxel indices) and in-plane radius (mm).
Chain = dict[int, tuple[int, int, float]]


class SlicePeaks:
    """The voxels of a 3-D peak mask listed per axial slice, from one ``np.nonzero`` of the whole volume.

    :func:`track_tube` looks up the peaks of one slice at every step, and a seed search runs hundreds of
    tracks over the same mask: a ``np.nonzero`` of a strided (x, y) slice each time cost seconds there.
    ``in_slice(z)`` gives the same coordinates, in the same order, as ``np.nonzero(mask[:, :, z])``.
    """

    def __init__(self, mask: np.ndarray) -> None:
        x, y, z = np.nonzero(mask)
        order = np.argsort(z, kind="stable")  # stable: x-major order within a slice, as np.nonzero
        self._x, self._y = x[order], y[order]
        self._bounds = np.searchsorted(z[order], np.arange(mask.shape[2] + 1))
        self.shape = mask.shape

    def in_slice(self, z: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self._bounds[z], self._bounds[z + 1]
        return self._x[lo:hi], self._y[lo:hi]


def distance_peaks(d2: np.ndarray, r_min: float) -> np.ndarray:
    """In-plane local maxima (3 x 3 in the slice) of the distance map ``d2`` of at least ``r_min`` (mm).

    The centres a tube track may step onto: a round section's centre is its distance map's maximum.
    """
    return (d2 >= r_min) & (d2 == ndimage.maximum_filter(d2, size=(3, 3, 1)))


def track_tube(
    peaks: np.ndarray | SlicePeaks,
    d2: np.ndarray,
    seed: tuple[int, int, int],
    spacing: Spacing,
    step_mm: float,
    directions: tuple[int, ...] = (1, -1),
    max_missed: int = 2,
    back_mm: float | None = None,
    ratio: tuple[float, float] = (0.6, 1.6),
    max_radius: float = np.inf,
) -> Chain:
    """Centres (x, y, in-plane radius) per slice of a tube followed up and down from ``seed`` (z, x, y).

    Each step takes the nearest peak within ``step_mm`` whose radius is ``ratio`` (0.6-1.6) x the last
    one (and at most ``max_radius``); up to
    ``max_missed`` slices without such a peak are bridged (the tube touching a neighbour there). With
    ``back_mm``, a step downwards may move the centre at most that far backwards (posterior). Callers that
    track many seeds over one mask pass it as :class:`SlicePeaks`.
    """
    if not isinstance(peaks, SlicePeaks):
        peaks = SlicePeaks(peaks)
    z0, x0, y0 = seed
    chain = {z0: (x0, y0, float(d2[x0, y0, z0]))}
    for direction in directions:
        cx, cy, r = chain[z0]
        z, missed = z0 + direction, 0
        while 0 <= z < peaks.shape[2] and missed <= max_missed:
            px, py = peaks.in_slice(z)
            dd = np.hypot((px - cx) * spacing[0], (py - cy) * spacing[1])
            rr = d2[px, py, z]
            ok = (dd <= step_mm * (1 + missed)) & (rr >= ratio[0] * r) & (rr <= min(ratio[1] * r, max_radius))
            if back_mm is not None and direction < 0:
                ok &= (py - cy) * spacing[1] >= -back_mm * (1 + missed)
            if ok.any():
                j = int(np.flatnonzero(ok)[np.argmin(dd[ok])])
                cx, cy, r = int(px[j]), int(py[j]), float(rr[j])
                chain[z] = (cx, cy, r)
                missed = 0
            else:
                missed += 1
            z += direction
    return chain


def tube_discs(chain: Chain, shape: tuple[int, ...], spacing: Spacing, pad: float = 0.5) -> np.ndarray:
    """Union of the tracked in-plane discs (centre and in-plane radius per slice).

    The radius is the distance map's value plus ``pad`` voxels: that value is the distance to the
    nearest outside voxel's centre, half a voxel beyond the edge; +0.5 also takes the wall.
    """
    out = np.zeros(shape, dtype=bool)
    for z, (cx, cy, r) in chain.items():
        rr = r + pad * max(spacing[0], spacing[1])
        out[:, :, z] = disc_mm(shape, (cx * spacing[0], cy * spacing[1]), rr, spacing)
    return out


def smooth_chain(chain: Chain, size: int = 5) -> Chain:
    """Running median of centre and radius along z over ``size`` slices.

    A slice where the track took a neighbour (or followed a narrowed lumen) is an outlier of a tube
    that changes slowly.
    """
    zs = sorted(chain)
    cols = [
        ndimage.median_filter(np.array([chain[z][k] for z in zs], float), size=size, mode="nearest")
        for k in range(3)
    ]
    return {z: (int(round(x)), int(round(y)), float(r)) for z, x, y, r in zip(zs, *cols, strict=True)}


def fill_gaps(chain: Chain) -> Chain:
    """Centre and radius interpolated linearly in the slices a track bridged."""
    zs = np.array(sorted(chain))
    full = np.arange(zs[0], zs[-1] + 1)
    cols = [np.interp(full, zs, [chain[z][k] for z in zs]) for k in range(3)]
    return {int(z): (int(round(x)), int(round(y)), float(r)) for z, x, y, r in zip(full, *cols, strict=True)}
