"""Bone: dense voxels, less contrast-filled blood pools and calcifications between the lungs."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.morph import Spacing, label_sums

#: Erosion (voxels) whose components are classified: ribs vanish in it and stay bone.
CORE_EROSION_VOXELS = 2
#: A dense core this large (ml) whose mean is above ``contrast_mean_hu_min`` is a blood pool.
BLOOD_POOL_MIN_ML = 5.0
#: Window (voxels, so within 2 voxels) in which cortical density counts as near a voxel.
CORTEX_WINDOW_VOXELS = 5
#: A dense component is between the lungs when this share of it lies there.
INNER_SHARE = 0.9
#: ... and has no cortex of its own when less than this share of it lies near cortical density.
CORTEX_SHARE_MAX = 0.25
#: Blood cores are grown back this many voxels within the dense voxels.
REGROW_VOXELS = 3
#: Dense specks between the lungs smaller than this (ml) are noisy blood or calcified plaque.
SPECK_MAX_ML = 2.0


def find_bone(
    hu: np.ndarray, body: np.ndarray, inner: np.ndarray, spacing: Spacing, cfg: IntensityConfig
) -> np.ndarray:
    """Dense voxels, less contrast-filled blood pools and calcifications.

    A dense component is blood (or calcified plaque) rather than bone when its mean is above any bone's
    at the working grid, or when it lies wholly inside ``inner`` (between the lungs): spine, sternum and
    ribs always reach beyond that space.
    """
    dense = body & (hu >= cfg.bone_hu_min)
    # At the working grid a contrast-filled aorta may touch a vertebra in a voxel or two: classify the
    # components of the eroded dense mask (ribs vanish in it and stay bone), then grow blood back.
    core = ndimage.binary_erosion(dense, iterations=CORE_EROSION_VOXELS)
    labels, n = ndimage.label(core)
    if n == 0:
        return dense
    index = np.arange(1, n + 1)
    count = label_sums(labels, n)[1:]
    ml = count * float(np.prod(spacing)) / 1000.0
    means = label_sums(labels, n, hu)[1:] / np.maximum(count, 1)
    share_inner = label_sums(labels, n, inner)[1:] / np.maximum(count, 1)
    # The vertebral body also lies between the lungs, but most of its core lies within two voxels of its
    # cortex, denser than any blood pool; a blood pool only touches bone at a small part of its core.
    near_cortex = ndimage.maximum_filter((hu >= cfg.cortex_hu_min).view(np.uint8), size=CORTEX_WINDOW_VOXELS)
    cortex_share = label_sums(labels, n, near_cortex)[1:] / np.maximum(count, 1)
    is_blood = np.zeros(n + 1, dtype=bool)
    inside = (share_inner >= INNER_SHARE) & (cortex_share < CORTEX_SHARE_MAX)
    is_blood[index[((ml >= BLOOD_POOL_MIN_ML) & (means >= cfg.contrast_mean_hu_min)) | inside]] = True
    blood = ndimage.binary_dilation(is_blood[labels], iterations=REGROW_VOXELS) & dense
    # Small dense specks between the lungs (noisy contrast blood just above the threshold, calcified
    # plaque) have no core at all: they are not bone either.
    # A blood pool whose median lies near the threshold is a speckled network of dense voxels with only
    # a small core: what the grow-back of that core did not reach is likewise blood when it lies between
    # the lungs away from any cortex (a vertebral body there has its cortex all round).
    specks, m = ndimage.label(dense & ~blood)
    if m:
        sidx = np.arange(1, m + 1)
        scount = label_sums(specks, m)[1:]
        sinner = label_sums(specks, m, inner)[1:] / np.maximum(scount, 1)
        scortex = label_sums(specks, m, near_cortex)[1:] / np.maximum(scount, 1)
        small = np.zeros(m + 1, dtype=bool)
        small_ml = scount * float(np.prod(spacing)) / 1000.0 < SPECK_MAX_ML
        small[sidx[(small_ml | (scortex < CORTEX_SHARE_MAX)) & (sinner >= INNER_SHARE)]] = True
        blood |= small[specks]
    return dense & ~blood
