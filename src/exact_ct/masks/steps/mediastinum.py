"""Mediastinal space between the lungs and above the diaphragm, and the floor that bounds the mediastinum label."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.morph import Spacing, between, components_touching
from exact_ct.masks.steps.spine import SpineLine

#: Behind the vertebral bodies' front, only this far (mm) either side of the spine's midline is mediastinum
#: (lateral to it lie the paravertebral gutters).
PARAVERTEBRAL_MM = 25.0
#: The diaphragm under the space is the lowest lung within this distance (mm) along the row.
DIAPHRAGM_REACH_MM = 60.0
#: Pericardial fat around the mediastinal organs, at most (mm).
PERICARDIAL_FAT_MM = 15.0


def mediastinal_space(
    lung_l: np.ndarray, lung_r: np.ndarray, body: np.ndarray, spine: SpineLine, spacing: Spacing
) -> np.ndarray:
    """The space between the lungs, above the diaphragm: where heart, great vessels and esophagus lie.

    Per axial row, what lies right of the left lung and left of the right lung (a 3-D op). Behind the
    front of the vertebral body only the part within ``25 mm`` of the spine's midline counts: lateral to
    it are the paravertebral gutters, lung and pleural space (where dependent effusions lie). Below the
    lungs' medial bases that space would take the liver dome; the diaphragm is estimated per (x, y)
    column as the lowest lung voxel, smoothly interpolated under the heart where no lung lies.
    """
    lungs = lung_l | lung_r
    space = between(lung_l, lung_r, axis=0) & body & ~lungs
    floor = _diaphragm(lungs, spacing)
    z = np.arange(lungs.shape[2], dtype=np.float32)[None, None, :]
    space &= z >= floor[:, :, None]
    has, x_c, y_f = spine.has, spine.x_c, spine.y_f
    if has.any():
        x = np.arange(lungs.shape[0])[:, None, None] * spacing[0]
        y = np.arange(lungs.shape[1])[None, :, None] * spacing[1]
        xc = np.where(has, x_c, np.nanmedian(x_c))[None, None, :] * spacing[0]
        yf = np.where(has, y_f, np.nanmedian(y_f))[None, None, :] * spacing[1]
        space &= ~((y < yf) & (np.abs(x - xc) > PARAVERTEBRAL_MM))
    return space


def _diaphragm(lungs: np.ndarray, spacing: Spacing, reach_mm: float = DIAPHRAGM_REACH_MM) -> np.ndarray:
    """Per (x, y) column, the z index of the diaphragm under the space between the lungs.

    The lowest lung voxel of a column is the diaphragm only where lung reaches down to it; over the heart
    the upper lobes overhang and the column's lowest lung lies above the heart. Along each row (same
    antero-posterior level) the lowest lung within ``reach_mm`` left or right (the lung lateral to the
    heart goes down to the dome) is the floor; taking the row minimum keeps the whole heart above it.
    """
    has = lungs.any(axis=2)
    nz = lungs.shape[2]
    lowest = np.where(has, np.argmax(lungs, axis=2), nz).astype(np.float32)
    k = max(1, int(round(reach_mm / spacing[0])))
    return ndimage.minimum_filter1d(lowest, size=2 * k + 1, axis=0, mode="nearest")


def above_floor(
    lungs: np.ndarray, organs: np.ndarray, spacing: Spacing, fat_mm: float = PERICARDIAL_FAT_MM
) -> np.ndarray:
    """Voxels above the diaphragm, with the mediastinal organs known (a (nx, ny, nz) mask).

    The floor of :func:`_diaphragm` must reach under the heart, so under the domes it lies too low and
    takes the liver dome and the stomach. Where a column holds lung and no mediastinal organ within
    ``fat_mm`` (the pericardial fat around the heart), the diaphragm is right under the column's lowest
    lung voxel; columns with an organ reach down to that organ's lowest voxel; columns without lung keep
    the interpolated floor.
    """
    nz = lungs.shape[2]
    z = np.arange(nz, dtype=np.float32)
    has_lung = lungs.any(axis=2)
    lowest_lung = np.where(has_lung, np.argmax(lungs, axis=2), nz).astype(np.float32)
    has_organ = organs.any(axis=2)
    lowest_organ = np.where(has_organ, np.argmax(organs, axis=2), nz).astype(np.float32)
    r = [max(1, int(round(fat_mm / s))) for s in spacing[:2]]
    near_organ = ndimage.binary_dilation(has_organ, structure=np.ones((2 * r[0] + 1, 2 * r[1] + 1), bool))
    reach = ndimage.minimum_filter(lowest_organ, size=(2 * r[0] + 1, 2 * r[1] + 1))
    floor = _diaphragm(lungs, spacing)
    own = np.where(near_organ, np.minimum(lowest_lung, reach), lowest_lung)
    floor = np.where(has_lung, np.maximum(floor, own), floor)
    return z[None, None, :] >= floor[:, :, None]


def under_floor_tissue(region: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Voxels of ``soft`` inside ``region`` connected (3-D) to ``soft`` under the region's floor.

    The floor of each (x, y) column is its lowest region voxel (columns without region take the
    region's lowest slice). What is continuous with the tissue below it (diaphragm, liver dome, the
    inferior vena cava) bulges up into the space between the lung bases; the mediastinum's own soft
    tissue above the floor is separated from it by fat or belongs to an organ (excluded from ``soft``).
    """
    has = region.any(axis=2)
    if not has.any():
        return np.zeros_like(region)
    low = np.where(has, np.argmax(region, axis=2), 0)
    low = np.where(has, low, int(low[has].min()))
    below = soft & ~region & (np.arange(region.shape[2])[None, None, :] < low[:, :, None])
    return components_touching(soft, below) & region
