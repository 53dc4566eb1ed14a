"""Lungs: aerated components that are not bowel gas, assigned to left and right."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.morph import Spacing, fill_small_holes_2d, label_sums
from exact_ct.masks.steps.body import MEDIAN_SHARE

#: A lung component spanning both sides is split from seeds farther than this share of the lungs' width
#: from their midline.
SIDE_SEED_SHARE = 0.2


def find_lungs(
    lung_air: np.ndarray, hu: np.ndarray, spacing: Spacing, cfg: IntensityConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Left and right lung: aerated components that are not bowel gas, split at the narrowest junction."""
    labels, n = ndimage.label(lung_air)
    if n == 0:
        return np.zeros_like(lung_air), np.zeros_like(lung_air)
    index = np.arange(1, n + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    count = label_sums(labels, n)[1:]
    sizes = count * voxel_ml
    dark = label_sums(labels, n, hu <= cfg.gas_median_hu_max)[1:] / np.maximum(count, 1)  # median test
    keep = np.zeros(n + 1, dtype=bool)
    keep[index[(sizes >= cfg.min_lung_ml) & (dark < MEDIAN_SHARE)]] = True
    lungs = keep[labels]
    # Vessels inside the lung are lung too: fill small in-slice holes (never the mediastinum between them).
    lungs = fill_small_holes_2d(lungs, cfg.lung_hole_max_mm2 / (spacing[0] * spacing[1]))
    if not lungs.any():
        return lungs, lungs.copy()
    xs = np.flatnonzero(lungs.any(axis=(1, 2)))
    x_mid = 0.5 * (xs[0] + xs[-1])
    span = xs[-1] - xs[0]
    x = np.arange(lungs.shape[0])[:, None, None]
    comp, m = ndimage.label(lungs)
    left = np.zeros_like(lungs)
    right = np.zeros_like(lungs)
    for k, sl in enumerate(ndimage.find_objects(comp), start=1):
        piece = comp[sl] == k
        lo, hi = sl[0].start, sl[0].stop - 1
        if lo < x_mid - SIDE_SEED_SHARE * span and hi > x_mid + SIDE_SEED_SHARE * span:
            # Both lungs in one component (they touch at the anterior junction line): seeds far from the
            # midline, and a watershed on the distance map splits at the narrowest neck.
            xx = x[sl[0]]
            markers = np.zeros(piece.shape, dtype=np.int32)
            markers[piece & (xx < x_mid - SIDE_SEED_SHARE * span)] = (
                1  # RAS+: patient's left has the smaller x
            )
            markers[piece & (xx > x_mid + SIDE_SEED_SHARE * span)] = 2
            dist = ndimage.distance_transform_edt(piece, sampling=spacing)
            split = watershed(-dist, markers, mask=piece)
            left[sl] |= split == 1
            right[sl] |= split == 2
        else:
            centre = 0.5 * (lo + hi)
            (left if centre < x_mid else right)[sl] |= piece
    return left, right
