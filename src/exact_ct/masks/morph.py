"""Morphology in millimetres (distance-transform based) and grid changes shared by the mask backends."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

Spacing = tuple[float, float, float]

#: 2-D connectivity inside each axial slice (z is the last axis), used for per-slice hole filling.
SLICE_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
SLICE_STRUCTURE[:, :, 1] = ndimage.generate_binary_structure(2, 1)
#: Face connectivity in a slice and in the volume.
CROSS_2D = ndimage.generate_binary_structure(2, 1)
CROSS_3D = ndimage.generate_binary_structure(3, 1)


def ball(radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Ellipsoidal structuring element (in voxels) of a ball of ``radius_mm``."""
    r = [int(np.floor(radius_mm / s)) for s in spacing]
    grid = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    squared: np.ndarray = sum((g * s) ** 2 for g, s in zip(grid, spacing, strict=True))  # type: ignore[assignment]
    return squared <= radius_mm**2 + 1e-6


#: Up to this radius (in voxels) a structuring element is cheaper than a distance transform.
_SMALL_RADIUS_VOXELS = 2


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Euclidean dilation by a radius in mm (an exact ball, anisotropic spacing handled)."""
    if not mask.any():
        return mask.copy()
    if radius_mm / min(spacing) <= _SMALL_RADIUS_VOXELS:
        return ndimage.binary_dilation(mask, structure=ball(radius_mm, spacing))
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def erode_mm(mask: np.ndarray, radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Euclidean erosion by a radius in mm.

    The mask is assumed to continue beyond the field of view (edge padding), so that an organ cut by a
    tight crop is not eroded from the cut.
    """
    if not mask.any():
        return mask.copy()
    if radius_mm / min(spacing) <= _SMALL_RADIUS_VOXELS:
        return ndimage.binary_erosion(mask, structure=ball(radius_mm, spacing), border_value=1)
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing]
    padded = np.pad(mask, [(p, p) for p in pad], mode="edge")
    inside = ndimage.distance_transform_edt(padded, sampling=spacing)
    px, py, pz = pad
    return inside[px:-px, py:-py, pz:-pz] > radius_mm


def depth_mm(mask: np.ndarray, spacing: Spacing, pad_mm: float) -> np.ndarray:
    """Distance (mm) of each ``mask`` voxel to the background, the mask continuing beyond the field of view.

    ``depth_mm(m, s, r) > r`` is :func:`erode_mm` by ``r`` (large radius); with the depth map at hand,
    erosions by several radii cost one distance transform.
    """
    pad = [int(np.ceil(pad_mm / s)) + 1 for s in spacing]
    padded = np.pad(mask, [(p, p) for p in pad], mode="edge")
    inside = ndimage.distance_transform_edt(padded, sampling=spacing)
    px, py, pz = pad
    return inside[px:-px, py:-py, pz:-pz]


def inplane_distance(mask: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Distance (mm) to the nearest background voxel within the same axial slice."""
    # A huge z spacing makes the 3-D transform ignore neighbours in other slices.
    padded = np.pad(mask, ((1, 1), (1, 1), (0, 0)))
    d = ndimage.distance_transform_edt(padded, sampling=(spacing[0], spacing[1], 1e6))
    return d[1:-1, 1:-1, :]


def disc_mm(
    shape: tuple[int, ...], centre: tuple[float, float], radius: float, spacing: Spacing
) -> np.ndarray:
    """In-slice disc (the first two axes of ``shape``) of ``radius`` around ``centre``, both in mm."""
    gx = np.arange(shape[0])[:, None] * spacing[0]
    gy = np.arange(shape[1])[None, :] * spacing[1]
    return (gx - centre[0]) ** 2 + (gy - centre[1]) ** 2 <= radius * radius


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill holes slice by slice (axial), so that the lungs count as inside the body.

    One labeling of the background with in-slice connectivity: background components that do not touch
    the slice border are holes (much faster than scipy's iterative ``binary_fill_holes``).
    """
    labels, n = ndimage.label(~mask, structure=SLICE_STRUCTURE)
    if n == 0:
        return mask.copy()
    outside = np.zeros(n + 1, dtype=bool)
    for edge in (labels[[0, -1], :, :], labels[:, [0, -1], :]):
        outside[np.unique(edge)] = True
    outside[0] = True  # label 0 is the mask itself
    return mask | ~outside[labels]


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def label_sums(labels: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-label sums (count, or sum of ``weights``) for labels 0..n, by one ``np.bincount``.

    Several times faster than ``ndimage.sum_labels`` / ``ndimage.mean``, which sort the label image.
    """
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    return np.bincount(labels.ravel(), weights=w, minlength=n + 1).astype(np.float64)


def components_touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Connected components of ``mask`` that contain at least one ``seed`` voxel."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    keep = np.unique(labels[seed & mask])
    keep = keep[keep > 0]
    return np.isin(labels, keep)


def hull_2d(mask: np.ndarray) -> np.ndarray:
    """Convex hull of each axial slice (skimage), slices with < 3 voxels left as they are."""
    out = mask.copy()
    for z in np.flatnonzero(mask.any(axis=(0, 1))):
        sl = mask[:, :, z]
        if sl.sum() >= 3:
            out[:, :, z] = convex_hull_image(sl)
    return out


def downsample_factors(spacing: Spacing, grid_mm: float) -> tuple[int, int, int]:
    """Integer block sizes that bring each axis closest to ``grid_mm`` without going coarser."""
    return tuple(max(1, int(np.floor(grid_mm / s + 1e-6))) for s in spacing)  # type: ignore[return-value]


def block_mean(volume: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Mean over non-overlapping blocks (edge blocks may be partial, padded with their edge values), float32.

    Adds the strided views of each axis in turn (``v[0::f] + v[1::f] + ...``) in int32 for integer
    volumes: whole-plane vectorised adds, no float copy of the full-resolution volume (a reduction over a
    reshaped short axis is several times slower).
    """
    if factors == (1, 1, 1):
        return volume.astype(np.float32, copy=False)
    acc_type = np.int32 if np.issubdtype(volume.dtype, np.integer) else np.float64
    v = volume
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        n = -(-v.shape[axis] // f)
        acc: np.ndarray | None = None
        for i in range(f):
            part = v[tuple(slice(i, None, f) if a == axis else slice(None) for a in range(3))]
            if part.shape[axis] < n:  # the partial edge block repeats the volume's last plane
                last = v[tuple(slice(-1, None) if a == axis else slice(None) for a in range(3))]
                part = np.concatenate([part] + [last] * (n - part.shape[axis]), axis=axis)
            acc = part.astype(acc_type) if acc is None else np.add(acc, part, out=acc, dtype=acc_type)
        v = acc  # type: ignore[assignment]
    return (v / float(np.prod(factors))).astype(np.float32)


def upsample_labels(labels: np.ndarray, factors: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour inverse of :func:`block_mean`: repeat each coarse voxel, crop to ``shape``.

    Repeats the last axis first, cropping as it goes, so that the one full-size copy is the final repeat
    along x, whose crop is a contiguous view.
    """
    out = labels
    for axis in (2, 1, 0):
        if factors[axis] > 1:
            out = np.repeat(out, factors[axis], axis=axis)
        out = out[tuple(slice(0, shape[a]) if a == axis else slice(None) for a in range(3))]
    return np.ascontiguousarray(out)


def between(first: np.ndarray, second: np.ndarray, axis: int = 0) -> np.ndarray:
    """Voxels with a ``first`` voxel at a lower and a ``second`` voxel at a higher index along ``axis``.

    With ``first`` = left lung and ``second`` = right lung along x (RAS+) this is the space between the
    lungs, row by row, as two cumulative maxima: a 3-D op, far cheaper than a convex hull per slice.
    """
    after_first = np.maximum.accumulate(first, axis=axis)
    before_second = np.flip(np.maximum.accumulate(np.flip(second, axis=axis), axis=axis), axis=axis)
    return after_first & before_second


def between_lungs(mask: np.ndarray) -> np.ndarray:
    """Row-wise (x) span of ``mask``: every voxel between its leftmost and rightmost voxel of that row."""
    return between(mask, mask, axis=0)


def fill_small_holes_2d(mask: np.ndarray, max_voxels: float) -> np.ndarray:
    """Fill in-slice holes of at most ``max_voxels`` voxels (vessels in the lung, not the mediastinum)."""
    labels, n = ndimage.label(~mask, structure=SLICE_STRUCTURE)
    if n == 0:
        return mask.copy()
    small = np.bincount(labels.ravel()) <= max_voxels
    for edge in (labels[[0, -1], :, :], labels[:, [0, -1], :]):
        small[np.unique(edge)] = False  # background that reaches the slice border is no hole
    small[0] = False
    return mask | small[labels]


def nearer_to_first(first: np.ndarray, second: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Of the voxels in both masks, those nearer (relative to the section's size) to ``first``'s section.

    Two round sections that touch without an edge (unenhanced aorta and esophagus, an aorta's soft tissue
    and the esophagus) overlap when each is fitted on its own. Each overlap voxel is compared with the
    two in-slice sections it lies in (2-D components, :data:`SLICE_STRUCTURE`): its distance to a
    section's centroid divided by that section's equal-area radius; ties go to ``first``.
    """
    both = first & second
    if not both.any():
        return both
    vx, vy, _ = np.nonzero(both)
    norm = []
    for mask in (first, second):
        labels, n = ndimage.label(mask, structure=SLICE_STRUCTURE)
        count = np.maximum(label_sums(labels, n), 1.0)
        cx = (
            label_sums(labels, n, np.broadcast_to(np.arange(mask.shape[0])[:, None, None], mask.shape))
            / count
        )
        cy = (
            label_sums(labels, n, np.broadcast_to(np.arange(mask.shape[1])[None, :, None], mask.shape))
            / count
        )
        radius = np.sqrt(count * spacing[0] * spacing[1] / np.pi)
        lab = labels[both]
        norm.append(np.hypot((vx - cx[lab]) * spacing[0], (vy - cy[lab]) * spacing[1]) / radius[lab])
    out = np.zeros_like(both)
    out[both] = norm[0] <= norm[1]
    return out


def bbox(mask: np.ndarray, pad: int) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` grown by ``pad`` voxels, clipped to the volume."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(int(idx[0]) - pad, 0), min(int(idx[-1]) + pad + 1, mask.shape[axis])))
    return tuple(out)  # type: ignore[return-value]
