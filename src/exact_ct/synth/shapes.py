"""Vectorised shape primitives for the phantom: coordinates, tubes, ellipsoids and smooth random fields."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Point = tuple[float, float, float]


@dataclass
class Space:
    """Phantom-frame coordinates (mm) of every voxel, after a smooth random deformation.

    The frame is centred on the body in-plane, with z = 0 at the top of the right hemidiaphragm;
    x points to the patient's Right, y Anterior, z Superior (the same axes as the canonical grid).
    ``x1``/``y1``/``z1`` are the undeformed 1-D coordinates used to turn millimetres into indices.
    """

    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    z1: np.ndarray
    spacing: tuple[float, float, float]
    max_warp: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.x1.size, self.y1.size, self.z1.size)

    def bbox(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index box covering frame points lo..hi (mm), padded by the deformation amplitude."""
        out = []
        for axis, c in enumerate((self.x1, self.y1, self.z1)):
            step = self.spacing[axis]
            a = int(np.floor((lo[axis] - self.max_warp - c[0]) / step)) - 1
            b = int(np.ceil((hi[axis] + self.max_warp - c[0]) / step)) + 2
            a, b = max(a, 0), min(b, c.size)
            if a >= b:
                return None
            out.append(slice(a, b))
        return (out[0], out[1], out[2])

    def index_of(self, p: Point) -> tuple[int, int, int]:
        """Nearest voxel of an (undeformed) frame point, clipped to the grid."""
        idx = []
        for axis, c in enumerate((self.x1, self.y1, self.z1)):
            i = int(round((p[axis] - c[0]) / self.spacing[axis]))
            idx.append(min(max(i, 0), c.size - 1))
        return (idx[0], idx[1], idx[2])


def smooth_1d(rng: np.random.Generator, t: np.ndarray, amplitude: float, period: float) -> np.ndarray:
    """A smooth random function of one coordinate: three random low-frequency sines."""
    out = np.zeros_like(t, dtype=np.float32)
    for k in (1, 2, 3):
        out += (rng.normal() / k) * np.sin(2 * np.pi * k * t / period + rng.uniform(0, 2 * np.pi))
    return (amplitude / 1.8) * out


def make_space(
    rng: np.random.Generator,
    x1: np.ndarray,
    y1: np.ndarray,
    z1: np.ndarray,
    spacing: tuple[float, float, float],
    warp_mm: float,
) -> Space:
    """Coordinates with a separable smooth warp: each axis is displaced by a function of the other two."""
    x = x1[:, None, None].astype(np.float32)
    y = y1[None, :, None].astype(np.float32)
    z = z1[None, None, :].astype(np.float32)
    dx = smooth_1d(rng, y, warp_mm, 400.0) * (1 + smooth_1d(rng, z, 0.5, 500.0)) + smooth_1d(
        rng, z, warp_mm, 600.0
    )
    dy = smooth_1d(rng, x, warp_mm, 400.0) * (1 + smooth_1d(rng, z, 0.5, 500.0)) + smooth_1d(
        rng, z, warp_mm, 600.0
    )
    dz = smooth_1d(rng, x, warp_mm, 500.0) + smooth_1d(rng, y, warp_mm, 500.0)
    X = np.broadcast_to(x + dx, (x1.size, y1.size, z1.size)).astype(np.float32)
    Y = np.broadcast_to(y + dy, X.shape).astype(np.float32)
    Z = np.broadcast_to(z + dz, X.shape).astype(np.float32)
    return Space(X, Y, Z, x1, y1, z1, spacing, max_warp=float(3 * warp_mm))


def segment(
    space: Space, p0: Point, p1: Point, reach: float
) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray] | None:
    """Distance (mm) of the voxels near segment p0-p1 to it, and the position t in [0, 1] along it.

    Only a bounding box around the segment (padded by ``reach``) is computed, which keeps tube
    drawing cheap even for a whole airway tree.
    """
    a, b = np.asarray(p0, dtype=np.float32), np.asarray(p1, dtype=np.float32)
    sl = space.bbox(np.minimum(a, b) - reach, np.maximum(a, b) + reach)
    if sl is None:
        return None
    px, py, pz = space.X[sl] - a[0], space.Y[sl] - a[1], space.Z[sl] - a[2]
    d = b - a
    length2 = float(d @ d) or 1e-6
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / length2, 0.0, 1.0)
    dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
    return sl, dist, t


def ellipsoid(
    space: Space, centre: Point, radii: Point, angle_z: float = 0.0, reach: float = 0.0
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Normalised radius (1 on the surface) of an ellipsoid rotated about z, within its bounding box."""
    r = max(radii) + reach
    c = np.asarray(centre, dtype=np.float32)
    sl = space.bbox(c - r, c + r)
    if sl is None:
        return None
    dx, dy, dz = space.X[sl] - c[0], space.Y[sl] - c[1], space.Z[sl] - c[2]
    ca, sa = np.cos(angle_z), np.sin(angle_z)
    u = ca * dx + sa * dy
    v = -sa * dx + ca * dy
    rho = np.sqrt((u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (dz / radii[2]) ** 2)
    return sl, rho


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: tuple[float, ...]
) -> np.ndarray:
    """Gaussian-filtered white noise, normalised to unit standard deviation (a smooth random field).

    Computed on a grid downsampled by up to 4x when the smoothing is wide, then upsampled linearly:
    the result is equally smooth and much cheaper.
    """
    factor = [max(1, min(4, int(s // 2))) for s in sigma_vox]
    small = tuple(max(2, -(-n // f)) for n, f in zip(shape, factor, strict=True))
    field = rng.standard_normal(small, dtype=np.float32)
    field = ndimage.gaussian_filter(
        field, [s / f for s, f in zip(sigma_vox, factor, strict=True)], mode="wrap"
    )
    if small != tuple(shape):
        field = ndimage.zoom(
            field,
            [n / m for n, m in zip(shape, small, strict=True)],
            order=1,
            grid_mode=True,
            mode="grid-wrap",
        )
        field = _fit(field, shape)
    std = float(field.std()) or 1.0
    return (field - float(field.mean())) / std


def _fit(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Crop or edge-pad an array to exactly ``shape`` (zoom can be one voxel off)."""
    sl = tuple(slice(0, n) for n in shape)
    a = a[sl]
    pad = [(0, n - m) for n, m in zip(shape, a.shape, strict=True)]
    return np.pad(a, pad, mode="edge") if any(p[1] for p in pad) else a


def ball_index(
    space: Space, centre_idx: tuple[int, int, int], radii_mm: tuple[float, float, float]
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Normalised radius of an axis-aligned ellipsoid around a voxel, in index space with physical spacing."""
    sl = []
    grids = []
    for axis in range(3):
        r = int(np.ceil(radii_mm[axis] / space.spacing[axis])) + 1
        a = max(centre_idx[axis] - r, 0)
        b = min(centre_idx[axis] + r + 1, space.shape[axis])
        sl.append(slice(a, b))
        grids.append(
            ((np.arange(a, b) - centre_idx[axis]) * space.spacing[axis] / radii_mm[axis]).astype(np.float32)
        )
    rho = np.sqrt(grids[0][:, None, None] ** 2 + grids[1][None, :, None] ** 2 + grids[2][None, None, :] ** 2)
    return (sl[0], sl[1], sl[2]), rho
