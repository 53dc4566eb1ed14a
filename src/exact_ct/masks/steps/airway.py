"""Airway lumen: trachea and main bronchi tracked down from the top of the scan."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.morph import CROSS_2D, Spacing

#: The trachea's seed is looked for this far (mm) down from the highest air: lower, air near the
#: midline is bowel.
SEED_SEARCH_MM = 80.0
#: The seed's centre lies within this share of the body's width of its midline.
MIDLINE_SHARE = 0.12
#: The trachea's connected air is checked for widening over this length (mm) below the seed.
TUBE_CHECK_MM = 20.0


def track_airway(
    air: np.ndarray, hu: np.ndarray, body: np.ndarray, spacing: Spacing, cfg: IntensityConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Trachea and main bronchi, tracked down from the top of the scan; returns (airway, other air).

    In the highest slices the trachea is a small, round air section near the body's midline. It is
    followed slice by slice downwards: every air section overlapping the airway of the slice above is
    airway while it stays small (trachea, then the two main bronchi after the carina); a section much
    larger than the trachea is lung, where a main bronchus ends (only its overlap is kept). Returns
    the lumen; its wall is drawn by :func:`exact_ct.masks.steps.airway_wall.airway_with_wall`. Only the coarse
    slices are looped over (a few hundred small 2-D labelings).
    """
    out = np.zeros_like(air)
    if not air.any():
        return out, air
    px_mm2 = spacing[0] * spacing[1]
    xs = np.flatnonzero(body.any(axis=(1, 2)))
    x_mid, width = 0.5 * (xs[0] + xs[-1]), max(xs[-1] - xs[0], 1)
    lo_a, hi_a = cfg.airway_area_mm2
    nz = air.shape[2]
    top = int(np.flatnonzero(air.any(axis=(0, 1)))[-1])
    seed_z, seed = -1, None
    # The seed must be found in the upper part of the scan: lower down, air near the midline is bowel.
    for z in range(top, max(top - int(SEED_SEARCH_MM / spacing[2]), -1), -1):
        lab, n = ndimage.label(air[:, :, z], structure=CROSS_2D)
        if n == 0:
            continue
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(np.ones_like(lab), lab, idx) * px_mm2
        cx = np.array([c[0] for c in ndimage.center_of_mass(lab > 0, lab, idx)])
        ok = (area >= lo_a) & (area <= hi_a) & (np.abs(cx - x_mid) < MIDLINE_SHARE * width)
        # A lung apex near the midline can be as small as the trachea in its top slice: the trachea is
        # the section that stays a tube below (its connected air does not widen), tried largest first.
        for k in idx[ok][np.argsort(-area[ok], kind="stable")]:
            if _is_tube(air, lab == k, z, area[k - 1], spacing, cfg.airway_tube_ratio):
                seed_z, seed = z, lab == k
                break
        if seed is not None:
            break
    if seed is None:
        return out, air
    seed_area = float(seed.sum()) * px_mm2
    limit = max(cfg.airway_branch_ratio * seed_area, lo_a)
    prev = seed
    out[:, :, seed_z] = seed
    # Upwards (neck above the first good section), then downwards to the main bronchi.
    for step in (1, -1):
        prev = seed
        z = seed_z + step
        while 0 <= z < nz and prev.any():
            lab, n = ndimage.label(air[:, :, z], structure=CROSS_2D)
            grown = ndimage.binary_dilation(prev, structure=CROSS_2D)
            hit = np.unique(lab[grown])
            hit = hit[hit > 0]
            nxt = np.zeros_like(prev)
            for k in hit:
                comp = lab == k
                if comp.sum() * px_mm2 <= limit:
                    nxt |= comp
                    continue
                # A lung: the bronchus either ends here or only touches the lung through partial volume
                # across its thin wall; then its dark lumen core, overlapping the airway above and within the
                # branch limit, goes on (with the ring of air around it, which holds the wall).
                core = comp & grown & (hu[:, :, z] < cfg.airway_lumen_hu)
                clab, cn = ndimage.label(core, structure=CROSS_2D)
                if cn:
                    carea = np.bincount(clab.ravel(), minlength=cn + 1)[1:] * px_mm2
                    keep = np.flatnonzero((carea >= lo_a) & (carea <= limit)) + 1
                    if keep.size:
                        nxt |= ndimage.binary_dilation(np.isin(clab, keep), structure=CROSS_2D) & comp
                        continue
                out[:, :, z] |= comp & grown
            out[:, :, z] |= nxt
            prev = nxt
            z += step
    zs = np.flatnonzero(out.any(axis=(0, 1)))
    if (zs[-1] - zs[0] + 1) * spacing[2] < cfg.airway_min_length_mm:
        return np.zeros_like(air), air
    return out, air & ~out


def _is_tube(
    air: np.ndarray, section: np.ndarray, z: int, area_mm2: float, spacing: Spacing, ratio: float
) -> bool:
    """Whether the air connected to ``section`` keeps an area <= ``ratio`` x its own over the next 20 mm down.

    The trachea's section barely changes over a few centimetres; a lung apex widens quickly.
    """
    px_mm2 = spacing[0] * spacing[1]
    prev = section
    for zz in range(z - 1, max(z - 1 - int(round(TUBE_CHECK_MM / spacing[2])), -1), -1):
        lab, _ = ndimage.label(air[:, :, zz], structure=CROSS_2D)
        hit = np.unique(lab[ndimage.binary_dilation(prev, structure=CROSS_2D)])
        hit = hit[hit > 0]
        if hit.size == 0:
            return True  # the tube ends (or is cut): nothing widened
        nxt = np.isin(lab, hit)
        if nxt.sum() * px_mm2 > ratio * area_mm2:
            return False
        prev = nxt
    return True
