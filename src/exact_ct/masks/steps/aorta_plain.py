"""Aorta of an unenhanced (plain) CT in the mediastinum: tracked tube, re-centred by circle fits.

Without contrast the aorta's blood (30-60 HU) has the density of the heart, the esophagus and the
prevertebral soft tissue, so where one of them touches the vessel there is no edge between them. The
in-plane distance map of the soft tissue then peaks between the two organs: its maximum is pulled
towards the neighbour and drops in radius, and a track that follows those maxima stops where a
neighbour touches. Elsewhere the vessel is wrapped in mediastinal fat. This module therefore

1. tracks the descending aorta as in a contrast CT (distance maxima left-anterior of the
   vertebral bodies), but bridges a few slices where a neighbour touches it;
2. re-centres each section on its *own* fat boundary: rays cast from the centre stop where the HU
   profile falls into fat, at dense bone or outside the mediastinal space; rays that run on through a
   touching organ find no boundary within reach of the tube's radius and are dropped; a circle of the
   tube's radius (the median of free per-slice fits: a tube keeps its calibre) is fitted to the rest
   (:mod:`exact_ct.masks.steps.aorta_plain_fit`);
3. follows that fitted circle down beyond the track's lower end while its section stays round and
   soft tissue, and the fat boundary keeps being found on enough rays (not up: above the descending
   limb the arch turns forwards, and higher up lie the thoracic inlet's prevertebral tissue and
   esophagus); the arch is the thick soft-tissue core connected to the track, at most
   ``ARCH_ABOVE_MM`` above its top;
4. finds the ascending aorta as the round soft-tissue tube that rises from the heart's top in front of
   the descending aorta and right of it (the pulmonary trunk ends at its bifurcation just above the
   heart; the superior vena cava lies further right and is narrower), and follows it up to the arch.

Everything holds for real chests: the descending aorta is round and fat-bounded on most of its
circumference, the esophagus and the heart touch it only on one side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from exact_ct.masks.morph import Spacing, components_touching, dilate_mm, inplane_distance, nearer_to_first
from exact_ct.masks.steps.aorta_plain_fit import extend, recentre, smooth_fill
from exact_ct.masks.steps.aorta_tracks import (
    ABOVE_HEART_MM,
    ASCENDING_AHEAD_MAX_MM,
    ASCENDING_AHEAD_MM,
    ASCENDING_MAX_RATIO,
    ASCENDING_RATIO,
    ASCENDING_RIGHT_MM,
    ASCENDING_RIGHT_TOL_MM,
    LUMEN_RADIUS_MIN_MM,
    MIN_TRACK_MM,
    ascending_limb,
    best_track,
    root_extension,
    track_ascending,
)
from exact_ct.masks.steps.esophagus import fit_esophagus
from exact_ct.masks.steps.spine import steady_spine
from exact_ct.masks.tubes import Chain, SlicePeaks, distance_peaks, tube_discs

if TYPE_CHECKING:
    from exact_ct.masks.config import IntensityConfig
    from exact_ct.masks.steps.spine import SpineLine

#: Smallest in-plane distance maximum (mm) that seeds or continues the unenhanced descending track. The
#: aorta's smallest radius is 8 mm (``aorta_radius_mm``), but on the backend's ~3.4 mm working grid the
#: distance map of an off-grid 10.7 mm section reads 7.5 mm (sqrt(5) voxels; synthetic study 15 had no track).
SEED_RADIUS_MIN_MM = 7.0
#: Slices bridged by the descending track where a neighbour touches the tube.
MAX_MISSED = 3
#: The arch's top lies at most this far above the descending track's top.
ARCH_ABOVE_MM = 40.0


def descending_track(
    front: np.ndarray, spine: SpineLine, spacing: Spacing, cfg: IntensityConfig, d2: np.ndarray | None = None
) -> Chain:
    """Longest tube track of ``front``'s distance maxima seeded left-anterior of the vertebral body.

    :func:`exact_ct.masks.steps.aorta_tracks.best_track`, as for the contrast aorta's lumen, but bridging
    up to ``MAX_MISSED`` slices where a neighbour touches.
    Tracks whose median lies less than half the expected offset left of the spine's midline are the
    esophagus's, not the aorta's. ``d2``: ``front``'s in-plane distance map, if already computed.
    """
    r_min, r_max = cfg.aorta_radius_mm
    r_min = min(r_min, SEED_RADIUS_MIN_MM)
    d2 = inplane_distance(front, spacing) if d2 is None else d2
    peaks = distance_peaks(d2, r_min) & (d2 <= r_max)

    def at_midline(chain: Chain) -> bool:  # the esophagus's track, not the aorta's
        left_mm = np.median([(spine.x_c[z] - c[0]) * spacing[0] for z, c in chain.items()])
        return bool(left_mm < 0.5 * cfg.aorta_offset_mm[0])

    return best_track(peaks, peaks, d2, spine, spacing, cfg, reject=at_midline, max_missed=MAX_MISSED)


def ascending_above_heart(
    tissue: np.ndarray, heart: np.ndarray, desc: Chain, spacing: Spacing, cfg: IntensityConfig
) -> Chain:
    """The ascending aorta as a round soft-tissue tube rising from the heart's top; empty if none.

    Seeds are distance maxima of ``tissue`` (heart and esophagus excluded) in the slices just above the
    heart's top, of ``ASCENDING_RATIO[0]``-``ASCENDING_MAX_RATIO`` x the descending radius,
    ``ASCENDING_AHEAD_MM``-``ASCENDING_AHEAD_MAX_MM`` in front of the descending aorta and within
    ``ASCENDING_RIGHT_TOL_MM`` of ``ASCENDING_RIGHT_MM`` right of it. Each is tracked up (radius ratio
    ``ASCENDING_RATIO`` per slice); a track must rise at least ``ABOVE_HEART_MM`` (the pulmonary trunk
    bifurcates just above the heart); of those, the widest wins (the superior vena cava is narrower).
    """
    zs = np.flatnonzero(heart.any(axis=(0, 1)))
    if zs.size == 0 or not desc:
        return {}
    z_top = int(zs[-1])
    k_above = max(1, int(round(ABOVE_HEART_MM / spacing[2])))
    radius = float(np.median([c[2] for c in desc.values()]))
    d2 = inplane_distance(tissue & ~heart, spacing)
    peaks = distance_peaks(d2, LUMEN_RADIUS_MIN_MM)
    sized = peaks & (d2 >= ASCENDING_RATIO[0] * radius) & (d2 <= ASCENDING_MAX_RATIO * radius)
    listed = SlicePeaks(peaks)
    zd = np.array(sorted(desc))
    best: Chain = {}
    best_r = 0.0
    for z in range(z_top + 1, min(z_top + 1 + k_above, tissue.shape[2])):
        # the descending aorta's centre at this level (nearest tracked slice)
        dx, dy, _ = desc[int(zd[np.argmin(np.abs(zd - z))])]
        px, py = np.nonzero(sized[:, :, z])
        ahead = (py - dy) * spacing[1]
        right = (px - dx) * spacing[0]
        ok = (ahead >= ASCENDING_AHEAD_MM) & (ahead <= ASCENDING_AHEAD_MAX_MM)
        ok &= np.abs(right - ASCENDING_RIGHT_MM) <= ASCENDING_RIGHT_TOL_MM
        for i in np.flatnonzero(ok):
            r_seed = max(radius, float(d2[px[i], py[i], z]))
            seed = (z, int(px[i]), int(py[i]))
            chain = track_ascending(seed, r_seed, listed, d2, spacing, cfg, directions=(1,), max_missed=1)
            if max(chain) < z_top + k_above:
                continue
            r_med = float(np.median([c[2] for c in chain.values()]))
            if r_med > best_r:
                best, best_r = chain, r_med
    return best


def aorta_plain(
    hu: np.ndarray,
    region: np.ndarray,
    tissue: np.ndarray,
    heart: np.ndarray,
    eso_disc: np.ndarray,
    spine: SpineLine,
    spacing: Spacing,
    cfg: IntensityConfig,
    eso_fit: np.ndarray | None = None,
) -> np.ndarray:
    """The aorta of an unenhanced CT in the mediastinal box (see the module docstring).

    ``region`` is the mediastinal space, ``tissue`` its soft tissue (above ``fat_hu_max``), ``heart`` the
    heart, ``eso_disc`` the esophagus's fixed-size shape prior (placed first: its disc keeps the track
    from running into the esophagus), ``spine`` the vertebral bodies' midline and front, ``eso_fit`` the
    fitted esophagus (:func:`exact_ct.masks.steps.esophagus.fit_esophagus`; fitted here when not given).
    """
    empty = np.zeros_like(tissue)
    if not tissue.any() or not spine.has.any():
        return empty
    spine = steady_spine(spine, spacing)
    front = tissue & ~heart & ~eso_disc & ~spine.behind(tissue.shape[1])
    d2 = inplane_distance(front, spacing)
    chain = descending_track(front, spine, spacing, cfg, d2)
    if len(chain) * spacing[2] < MIN_TRACK_MM:
        return empty
    fat = cfg.fat_hu_max
    stop = ~region
    fits, _ = recentre(hu, stop, chain, spacing, fat, cfg.aorta_radius_mm)
    fits = extend(hu, stop, tissue, fits, spacing, fat, cfg.aorta_step_mm)
    mm = {z: (x / spacing[0], y / spacing[1], r) for z, (x, y, r) in fits.items()}
    desc = smooth_fill(mm)
    # the heart's voxels too: its regrowth takes the touching descending aorta (the caller gives them back)
    out = tube_discs(desc, tissue.shape, spacing, pad=0.0) & tissue
    # Where the esophagus touches the aorta there is no edge between them: the voxels inside both
    # fitted circles go to the one whose centre is nearer relative to its radius.
    eso = (
        eso_fit
        if eso_fit is not None
        else fit_esophagus(hu, region & ~heart, spine, np.zeros_like(region), spacing, cfg)
    )
    out &= ~(eso & ~nearer_to_first(out, eso, spacing))
    # Arch: the thick core of the soft tissue connected to the descending centres (as for the contrast aorta).
    r_track = float(np.median([c[2] for c in chain.values()]))
    core_r = cfg.aorta_core_ratio * r_track
    d3 = ndimage.distance_transform_edt(front, sampling=spacing)
    seeds = np.zeros_like(tissue)
    for z, (cx, cy, _) in chain.items():
        seeds[cx, cy, z] = True
    # The arch rises above the descending limb's top by about its own curvature at most: the thick soft
    # tissue higher up (prevertebral tissue and esophagus in the thoracic inlet) is not aorta.
    below = np.arange(tissue.shape[2]) <= max(chain) + int(round(ARCH_ABOVE_MM / spacing[2]))
    core = components_touching((d3 >= core_r) & below[None, None, :], seeds)
    out |= dilate_mm(core, core_r + 0.5 * max(spacing), spacing) & front
    all_peaks = distance_peaks(d2, LUMEN_RADIUS_MIN_MM)
    asc = ascending_limb(core, all_peaks, d2, chain, spacing, cfg)
    above = ascending_above_heart(front, heart, desc, spacing, cfg)
    for limb in (asc, above):
        if limb:
            out |= tube_discs(limb, tissue.shape, spacing) & front
    # The root inside the heart's outline: no edge there, so the tube is continued (heart included).
    limb = asc if asc and (not above or min(asc) <= min(above)) else above
    root = root_extension(limb, cfg.aortic_root_mm, spacing)
    out |= tube_discs(root, tissue.shape, spacing, pad=0.0) & (front | heart)
    return out
