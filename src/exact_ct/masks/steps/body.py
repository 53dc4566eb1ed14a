"""Body: everything that is not outside air, without the scanner table."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.morph import Spacing, dilate_mm, erode_mm, fill_holes_2d, label_sums, largest_component

#: A component's median lies below a level when at least this share of its voxels does (a count, much
#: faster than a median).
MEDIAN_SHARE = 0.5
#: Radius (mm) of the opening that cuts the thin contact between patient and table.
TABLE_OPENING_MM = 4.0


def find_body(hu: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """Everything that is not outside air, as its largest component after cutting off the scanner table.

    Outside air is air connected to the in-plane border whose median is darker than aerated lung; lungs
    of a tightly cropped scan also touch the border, but their median is well above -960 HU.
    """
    air = hu <= cfg.body_hu_min
    labels, _ = ndimage.label(air)
    edge = np.concatenate(
        [labels[[0, -1], :, :].ravel(), labels[:, [0, -1], :].ravel()]
    )  # labels on the in-plane border
    touching = np.unique(edge)
    touching = touching[touching > 0]
    outside = np.zeros(hu.shape, dtype=bool)
    if touching.size:
        # median <= gas_median_hu_max, computed as a share of dark voxels (much faster than a median)
        n_air = int(labels.max())
        dark_count = label_sums(labels, n_air, hu <= cfg.gas_median_hu_max)
        dark = dark_count[touching] / np.maximum(label_sums(labels, n_air)[touching], 1.0)
        lut = np.zeros(n_air + 1, dtype=bool)
        lut[touching[dark >= MEDIAN_SHARE]] = True
        outside = lut[labels]
    inside = ~outside
    # The opening cuts the thin contact between patient and table so that the table is its own component.
    opened = dilate_mm(erode_mm(inside & ~air, TABLE_OPENING_MM, spacing), TABLE_OPENING_MM, spacing) | (
        inside & air
    )
    body = largest_component(opened & inside)
    return fill_holes_2d(body)
