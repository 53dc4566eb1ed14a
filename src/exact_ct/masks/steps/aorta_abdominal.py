"""Aorta of an unenhanced CT where the mediastinal search finds none: a soft-tissue tube in front of the spine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from exact_ct.masks.hu import UNENHANCED_HU_MAX
from exact_ct.masks.morph import Spacing, inplane_distance
from exact_ct.masks.steps.aorta_tracks import BACK_STEP_MM, LUMEN_RADIUS_MIN_MM, MIN_TRACK_MM, best_track
from exact_ct.masks.tubes import distance_peaks, fill_gaps, smooth_chain, tube_discs

if TYPE_CHECKING:
    from exact_ct.masks.config import IntensityConfig
    from exact_ct.masks.steps.spine import SpineLine

#: From the diaphragm down the aorta lies on the left front of the vertebral body: its centre about
#: this far left of / in front of the spine's midline and front.
LOW_AORTA_OFFSET_MM = (10.0, 20.0)
LOW_AORTA_SEARCH_MM = 20.0
LOW_AORTA_AHEAD_MM = 40.0


def aorta_unenhanced(
    hu: np.ndarray,
    allowed: np.ndarray,
    bone: np.ndarray,
    spine: SpineLine,
    spacing: Spacing,
    cfg: IntensityConfig,
) -> np.ndarray:
    """The descending (and abdominal) aorta of a CT without contrast, as a round soft-tissue tube.

    Used where the mediastinal search finds none (a scan of the lung bases and the upper abdomen): there
    the aorta lies on the left front of the vertebral body, wrapped in fat. Seeds are soft-tissue
    distance maxima of aortic radius within ``LOW_AORTA_SEARCH_MM`` of that point
    (``LOW_AORTA_OFFSET_MM`` from the spine; the kidney lies much further left); each is tracked up and
    down through the whole scan; the longest wins.
    """
    empty = np.zeros_like(allowed)
    if not spine.has.any():
        return empty
    vessel = allowed & ~bone & (hu > cfg.fat_hu_max) & (hu < UNENHANCED_HU_MAX)
    d2 = inplane_distance(vessel, spacing)
    # A short scan sees the spine in a few slices only and its front there varies with the discs: one
    # robust midline and front (the front's 80th percentile) stand for every slice.
    known = spine.has
    x_c = float(np.median(spine.x_c[known]))
    y_f = float(np.percentile(spine.y_f[known], 80))
    nz = vessel.shape[2]
    line = type(spine)(np.ones(nz, dtype=bool), np.full(nz, x_c), np.full(nz, y_f))
    # The aorta's centre stays in a box on the left front of the vertebral body (the kidney lies further
    # left, the inferior vena cava right, the vertebral body behind).
    ex = x_c - LOW_AORTA_OFFSET_MM[0] / spacing[0]
    ey = y_f + LOW_AORTA_OFFSET_MM[1] / spacing[1]
    gx = (np.arange(vessel.shape[0])[:, None] - ex) * spacing[0]
    gy = (np.arange(vessel.shape[1])[None, :] - ey) * spacing[1]
    # (in front, the box reaches further: the lumbar lordosis carries the aorta forwards lower down)
    box = (np.abs(gx) <= LOW_AORTA_SEARCH_MM) & (gy >= -LOW_AORTA_SEARCH_MM) & (gy <= LOW_AORTA_AHEAD_MM)
    peaks = box[:, :, None] & distance_peaks(d2, LUMEN_RADIUS_MIN_MM)
    r_min, r_max = cfg.aorta_radius_mm
    chain = best_track(
        peaks & (d2 >= r_min) & (d2 <= r_max),
        peaks,
        d2,
        line,
        spacing,
        cfg,
        offset_mm=LOW_AORTA_OFFSET_MM,
        search_mm=LOW_AORTA_SEARCH_MM,
        max_missed=1,
        back_mm=BACK_STEP_MM,
    )
    if len(chain) * spacing[2] < MIN_TRACK_MM:
        return empty
    # (the soft-tissue section already holds the wall: the distance map's half voxel beyond the edge is
    # taken off)
    return tube_discs(smooth_chain(fill_gaps(chain)), d2.shape, spacing, pad=-0.5) & vessel
