"""Vertebral column: its bone component and, per axial slice, its midline and the vertebral bodies' front."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from exact_ct.masks.morph import Spacing, label_sums

#: Spinous process tip to vertebral body front of an adult thoracic vertebra is at most about this.
VERTEBRA_DEPTH_MM = 90.0
#: A long bone component is the vertebral column only if it holds at least this share of the largest one's voxels.
SPINE_MIN_SHARE = 0.25
#: The walk to the vertebral body's front looks this far (mm) either side of the column's midline.
MIDLINE_BAND_MM = 10.0
#: A gap this wide (mm, front to back) inside the column's own bone ends the vertebra.
BONE_GAP_MM = 15.0
#: Window (+-mm along z) over which the front is smoothed, and its upper percentile there.
FRONT_WINDOW_MM = 12.0
FRONT_PERCENTILE = 80
#: The vertebral bodies' front moves at most this far (mm) from the column's median front: a slice
#: beyond it is a walk that ran on into another dense structure (sternum, calcified heart).
SPINE_FRONT_TOL_MM = 25.0


def find_column(bone: np.ndarray, lung_l: np.ndarray, lung_r: np.ndarray) -> np.ndarray:
    """The vertebral column: of the long bone components at the lungs' level, the most posterior one.

    Long = spanning at least half of the lungs' z range (ribs are short in z); most posterior by mean y
    (RAS+: small y is posterior), so that a long sternum or a contrast-filled vessel is never taken.
    Only components whose mean x lies between the two lungs' centres count: in a crop the cut ends of
    ribs or a scapula at the lateral edge can be long and more posterior than the spine; and only those
    of at least ``SPINE_MIN_SHARE`` of the largest such component's volume.
    """
    lungs = lung_l | lung_r
    zs = lungs.any(axis=(0, 1))
    cand = bone & zs[None, None, :]
    labels, n = ndimage.label(cand)
    if n == 0:
        return cand
    extent = np.array([sl[2].stop - sl[2].start for sl in ndimage.find_objects(labels)])
    long_ = np.flatnonzero(extent >= 0.5 * min(zs.sum(), extent.max())) + 1
    n_all = int(labels.max())
    count = label_sums(labels, n_all)
    y_sum = label_sums(labels, n_all, np.broadcast_to(np.arange(cand.shape[1])[None, :, None], cand.shape))
    x_sum = label_sums(labels, n_all, np.broadcast_to(np.arange(cand.shape[0])[:, None, None], cand.shape))
    x_mean = x_sum[long_] / np.maximum(count[long_], 1)
    if lung_l.any() and lung_r.any():
        x_l = float(np.flatnonzero(lung_l.any(axis=(1, 2))).mean())
        x_r = float(np.flatnonzero(lung_r.any(axis=(1, 2))).mean())
        inner = (x_mean > min(x_l, x_r)) & (x_mean < max(x_l, x_r))
        if inner.any():
            long_ = long_[inner]
    # A thin posterior line (spinous process tips cut off by the field of view, or skin-level dense
    # material) can be long and more posterior than the spine: components under a quarter of the largest
    # long one's volume are not the column.
    long_ = long_[count[long_] >= SPINE_MIN_SHARE * count[long_].max()]
    y_mean = y_sum[long_] / np.maximum(count[long_], 1)
    return labels == long_[int(np.argmin(y_mean))]


@dataclass(frozen=True)
class SpineLine:
    """Per axial slice: whether the spine is there, its x centre and its anterior edge (voxel indices)."""

    has: np.ndarray
    x_c: np.ndarray
    y_f: np.ndarray

    def behind(self, ny: int, extra: float = 0.0) -> np.ndarray:
        """Voxels behind the vertebral body's anterior edge (+ ``extra`` voxels), where the spine is seen: (1, ny, nz)."""
        yf = np.where(self.has, np.nan_to_num(self.y_f, nan=-1.0) + extra, -1.0)
        return (np.arange(ny)[:, None] < yf[None, :])[None, :, :]

    def crop(self, box: tuple[slice, slice, slice]) -> SpineLine:
        sx, sy, sz = box
        return SpineLine(self.has[sz], self.x_c[sz] - sx.start, self.y_f[sz] - sy.start)


def front_of_spine(spine: np.ndarray, dense: np.ndarray, spacing: Spacing) -> SpineLine:
    """The vertebral body's x centre and anterior edge in every slice where the spine is seen.

    ``spine`` is the bone component of the column (it may be the neural arch alone: at a coarse grid
    the vertebral body's thin cortex can look like a contrast blood pool, and its spongy interior can be
    below the bone threshold); ``dense`` is every dense voxel with small in-slice holes (spinal canal,
    spongy bone) filled. Within ``+-10 mm`` of the spine's midline the edge is found by walking forward
    from the most posterior spine voxel through ``dense`` until a gap: the vertebral body lies directly
    in front of the arch, while the sternum (which ribs may join to the spine) and a contrast-filled
    aorta (left of the midline, or across a fat plane) do not continue it. Discs are not dense and end
    the walk at the arch, so the edge is an upper percentile over ``+-12 mm`` in z; missing slices are
    interpolated.
    """
    has = spine.any(axis=(0, 1))
    nz = spine.shape[2]
    x_c = np.full(nz, np.nan)
    y_f = np.full(nz, np.nan)
    half = max(1, int(round(MIDLINE_BAND_MM / spacing[0])))
    depth_px = VERTEBRA_DEPTH_MM / spacing[1]
    for z in np.flatnonzero(has):
        sx, sy = np.nonzero(spine[:, :, z])
        xm = float(np.median(sx))
        band = slice(max(int(round(xm)) - half, 0), int(round(xm)) + half + 1)
        near = np.abs(sx - xm) <= half
        if near.any() and sy[near].min() > sy.min() + depth_px:
            # Ribs join the sternum to the column: where the vertebra is not in this slice's bone
            # component near its midline, what is there lies further forward than a whole vertebra's
            # depth (the sternum); the slice is interpolated from its neighbours instead.
            has[z] = False
            continue
        y0 = int(sy[near].min() if near.any() else sy.min())
        column = dense[band, y0:, z].any(axis=0)
        column[0] = True
        # the first run of two non-dense voxels ends the vertebra (one may be noise)
        stop = np.flatnonzero(~column[1:] & ~np.append(column[2:], False))
        walk = int(stop[0]) if stop.size else column.size - 1
        if walk * spacing[1] > VERTEBRA_DEPTH_MM:
            # Longer than a whole vertebra (spinous process to body): the walk ran on into contrast
            # blood (a crop may hold only part of the spine); keep the bone component's own front.
            ys = np.unique(sy[near] if near.any() else sy)
            gaps = np.flatnonzero(np.diff(ys) * spacing[1] > BONE_GAP_MM)
            walk = int(ys[gaps[0]] if gaps.size else ys[-1]) - y0
        x_c[z], y_f[z] = xm, y0 + walk
    if has.sum() >= 2:
        zs = np.flatnonzero(has)
        k = max(2, int(round(FRONT_WINDOW_MM / spacing[2])))
        # discs are not bone and end the walk at the neural arch: they only ever move the edge back,
        # so an upper percentile (not the median) over the window gives the vertebral bodies' front
        y_f[zs] = ndimage.percentile_filter(y_f[zs], FRONT_PERCENTILE, size=2 * k + 1, mode="nearest")
        x_c[zs] = ndimage.median_filter(x_c[zs], size=2 * k + 1, mode="nearest")
        lo, hi = zs[0], zs[-1]
        inner = np.arange(lo, hi + 1)
        y_f[lo : hi + 1] = np.interp(inner, zs, y_f[zs])
        x_c[lo : hi + 1] = np.interp(inner, zs, x_c[zs])
        has = has.copy()
        has[lo : hi + 1] = True
    return SpineLine(has, x_c, y_f)


def steady_spine(spine: SpineLine, spacing: Spacing) -> SpineLine:
    """``spine`` with outlying fronts replaced by interpolation from the other slices.

    The thoracic column's front follows a gentle kyphosis: it stays within ``SPINE_FRONT_TOL_MM`` of its
    median over the chest. A run of slices far in front of it would cut the whole posterior mediastinum
    (and the descending aorta) out of the search.
    """
    zs = np.flatnonzero(spine.has & np.isfinite(spine.y_f))
    if zs.size < 3:
        return spine
    y = spine.y_f[zs]
    good = np.abs(y - np.median(y)) * spacing[1] <= SPINE_FRONT_TOL_MM
    if good.all() or good.sum() < 2:
        return spine
    y_f = spine.y_f.copy()
    y_f[zs] = np.interp(zs, zs[good], y[good])
    return type(spine)(spine.has, spine.x_c, y_f)
