"""Organs that no segmenter labels directly: pleura (pleural space) and mediastinum, derived from lungs.

Both backends use these so that the two definitions agree:

* **pleura** = a shell of ``shell_mm`` around each lung inside the thoracic cage, plus fluid-density
  voxels (pleural effusion) within ``effusion_max_mm`` of a lung that are connected to that shell. The
  pleural space is outside the lung surface: it is where effusions lie, between lung and chest wall.
* **mediastinum** = the soft tissue between the lungs: the axial convex hull of both lungs, minus the
  lungs, the pleura, bone (with the spinal canal) and every organ already labelled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.morph import Spacing, components_touching, fill_holes_2d, hull_2d


def thoracic_cage(lungs: np.ndarray, ribs: np.ndarray) -> np.ndarray:
    """Axial convex hull of the lungs and the ribs: the space an effusion can fill."""
    return hull_2d(lungs | (ribs & lungs.any(axis=(0, 1))[None, None, :]))


def pleura(
    lungs: np.ndarray,
    cage: np.ndarray,
    exclude: np.ndarray,
    spacing: Spacing,
    *,
    shell_mm: float,
    hu: np.ndarray | None = None,
    effusion_hu: tuple[float, float] = (-20.0, 35.0),
    effusion_max_mm: float = 60.0,
) -> np.ndarray:
    """Pleural space: shell around the lungs plus connected fluid (see module docstring).

    Args:
        lungs: both lungs (bool).
        cage: thoracic cage from :func:`thoracic_cage`.
        exclude: voxels that are certainly something else (other organs, bone, muscle).
        spacing: voxel spacing in mm (x, y, z).
        shell_mm: thickness of the shell.
        hu: the CT in HU on the same grid; without it only the shell is returned.
    """
    if not lungs.any():
        return np.zeros_like(lungs)
    allowed = cage & ~lungs & ~exclude
    dist = ndimage.distance_transform_edt(~lungs, sampling=spacing)
    shell = allowed & (dist <= shell_mm)
    if hu is None:
        return shell
    lo, hi = effusion_hu
    fluid = allowed & (dist <= effusion_max_mm) & (hu >= lo) & (hu <= hi)
    # Only fluid that reaches the lung surface is pleural: keep components touching the shell.
    return shell | components_touching(fluid | shell, shell)


def mediastinum_region(lungs: np.ndarray, body: np.ndarray, bone: np.ndarray) -> np.ndarray:
    """Space between the lungs: axial hull of both lungs inside the body, minus lungs and bone."""
    hull = hull_2d(lungs) & body
    return hull & ~lungs & ~fill_holes_2d(bone)
