"""Pleural space: a shell outside the lungs against chest wall and diaphragm, plus effusions connected to it."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.morph import CROSS_3D, Spacing, between_lungs, components_touching

#: The shell is at least one voxel thick (a little more, so that a neighbour one voxel away is in it).
SHELL_VOXELS = 1.05
#: Ribs run obliquely: in one slice only some of them are cut, so the cage is taken over +-this (mm) in z.
RIB_WINDOW_MM = 15.0


def find_pleura(
    hu: np.ndarray,
    lungs: np.ndarray,
    allowed: np.ndarray,
    bone: np.ndarray,
    spacing: Spacing,
    cfg: IntensityConfig,
) -> np.ndarray:
    """Pleural space: a one-voxel shell (>= ``pleura_shell_mm``) outside the lungs against chest wall and
    diaphragm, plus fluid-density voxels (effusion) connected to it within ``effusion_max_mm`` of a lung.

    ``allowed`` excludes the mediastinum and the other organs, so the shell only lines the costal and
    diaphragmatic surfaces. Fluid is judged on a 3x3x3 mean (noise) and must lie inside the rib cage.
    """
    d_xy = max(cfg.pleura_shell_mm, SHELL_VOXELS * max(spacing[0], spacing[1]))
    d_z = max(cfg.pleura_shell_mm, SHELL_VOXELS * spacing[2])
    scaled = (spacing[0] / d_xy, spacing[1] / d_xy, spacing[2] / d_z)
    if all(s > 1.0 / np.sqrt(2) for s in scaled):
        # one voxel in every direction: a face-connected dilation is the same set, and much faster
        near = ndimage.binary_dilation(lungs)
    else:
        near = ndimage.distance_transform_edt(~lungs, sampling=scaled) <= 1.0
    shell = near & ~lungs & allowed
    lo, hi = cfg.effusion_hu
    smooth = ndimage.uniform_filter(hu, size=3)
    # Ribs run obliquely: in one slice only some of them are cut, so the cage is taken over +-15 mm in z.
    k = max(1, int(round(RIB_WINDOW_MM / spacing[2])))
    ribs = ndimage.maximum_filter1d(bone, size=2 * k + 1, axis=2) & lungs.any(axis=(0, 1))[None, None, :]
    cage = between_lungs(lungs | ribs)
    reach = _near_coarse(lungs, cfg.effusion_max_mm, spacing)
    fluid = allowed & cage & reach & (smooth >= lo) & (smooth <= hi) & ~lungs
    # An effusion is a collection at least a few voxels thick. The chest wall's muscle next to the shell
    # also falls in the fluid range (partial volume with fat and pleura) but only as a thin layer along
    # the wall: an opening with the 6-neighbourhood keeps collections more than two voxels thick.
    thick = ndimage.binary_opening(fluid, structure=CROSS_3D)
    effusion = components_touching(thick | shell, shell) & thick
    if effusion.any():
        # Grow the collections back geodesically (a few voxels) through fluid and through the
        # partial-volume voxels between effusion and lung (darker than fluid, brighter than aerated
        # lung): their rims and thin tapering ends, with only a little of the wall muscle.
        # (judged on the voxel itself: next to rib or fat the 3x3x3 mean of a rim voxel leaves the range)
        partial = (hu > cfg.lung_hu_max) & (hu <= hi) & allowed & cage & ~lungs
        steps = max(1, int(round(cfg.effusion_regrow_mm / min(spacing))))
        effusion = ndimage.binary_dilation(
            effusion, structure=CROSS_3D, iterations=steps, mask=fluid | partial | effusion
        )
    return shell | effusion


def _near_coarse(mask: np.ndarray, radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Within ``radius_mm`` of ``mask``, computed on a grid twice as coarse (a large, tolerant margin)."""
    small = mask[::2, ::2, ::2]
    if not small.any():
        return np.zeros_like(mask)
    near = ndimage.distance_transform_edt(~small, sampling=tuple(2 * s for s in spacing)) <= radius_mm
    out = np.repeat(np.repeat(np.repeat(near, 2, axis=0), 2, axis=1), 2, axis=2)
    return out[: mask.shape[0], : mask.shape[1], : mask.shape[2]] | mask
