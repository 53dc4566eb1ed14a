"""HU levels of the intensity backend that are tissue facts rather than parameters, and the blood pool's own."""

from __future__ import annotations

import numpy as np

#: Partial-volume end points of an air-filled lumen: a voxel at ``AIR_HU`` is all air, one at ``WATER_HU``
#: (the airway's wall) none.
AIR_HU = -1000.0
WATER_HU = 0.0
#: Soft tissue: myocardium, vessel and esophageal wall, unenhanced blood.
SOFT_TISSUE_HU = 40.0
#: Bone and contrast blood are above this at the working grid: a ray that reaches such a sample has left
#: the soft-tissue section it was cast in.
DENSE_HU = 200.0
#: A heart (blood pool and myocardium) whose median is above this is contrast-enhanced: unenhanced
#: blood and myocardium lie at 30-60 HU, arterial or venous phase blood at 150-500 HU.
CONTRAST_BLOOD_HU = 120.0
#: Densest contrast blood at the working grid; cortical bone and metal are brighter.
BLOOD_HU_MAX = 900.0
#: Unenhanced blood and vessel wall are below this (a voxel brighter is bone or calcification).
UNENHANCED_HU_MAX = 150.0
#: Air in a hollow organ's lumen (blurred to a single voxel at the working grid) is darker than this.
LUMEN_AIR_HU = -150.0
#: The rim around such a lumen averages above this (wall with partial volume); around a fat pocket it is fat.
LUMEN_RIM_HU = -80.0
#: A main bronchus's lumen on its axis is at least this much darker than the ring of wall and lung around it.
BRONCHUS_CONTRAST_HU = 60.0


def blood_pool_hu(hu: np.ndarray, heart: np.ndarray) -> float | None:
    """Median HU of the heart mask (blood pool and myocardium), or None without a heart."""
    if not heart.any():
        return None
    return float(np.median(hu[heart]))


def lumen_threshold(blood_hu: float) -> float:
    """HU halfway between soft tissue and the blood pool: the enhanced lumen lies above it."""
    return 0.5 * (blood_hu + SOFT_TISSUE_HU)
