"""Aorta of a contrast CT: descending limb beside the spine, arch and ascending limb, tracked as tubes.

In contrast CT (blood pool > ``CONTRAST_BLOOD_HU``) the aorta's lumen is brighter than every soft tissue:
it is tracked slice by slice as the local maximum of the in-plane distance map of the blood-pool mask,
from the descending aorta beside the spine up to the arch and down through the hiatus into the abdomen;
the arch is the thick 3-D core connected to that track above the level where the two limbs part, and
the ascending aorta is tracked down from the arch until it widens into the left ventricle. Where the
lumen is narrowed (mural thrombus, a dissection, unenhanced blood mixing in), the vessel is the round
soft-tissue section around it, tracked on its own. Where no descending limb is found (the spine is
outside a crop), the ascending aorta is found from above the heart (``ascending_from_above``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from exact_ct.masks.hu import BLOOD_HU_MAX, lumen_threshold
from exact_ct.masks.morph import Spacing, components_touching, dilate_mm, disc_mm, inplane_distance
from exact_ct.masks.steps.aorta_tracks import (
    ABOVE_HEART_MM,
    ARCH_DEPTH_MM,
    BACK_STEP_MM,
    LUMEN_RADIUS_MIN_MM,
    MIN_TRACK_MM,
    ascending_limb,
    best_track,
    track_ascending,
)
from exact_ct.masks.tubes import (
    Chain,
    SlicePeaks,
    distance_peaks,
    fill_gaps,
    smooth_chain,
    track_tube,
    tube_discs,
)

if TYPE_CHECKING:
    from exact_ct.masks.config import IntensityConfig
    from exact_ct.masks.steps.spine import SpineLine

#: A soft-tissue section belongs to the lumen it surrounds only if the lumen's disc lies inside it up to
#: this share of its radius (and one voxel): an eccentric lumen in a thrombus still does (aorta_report:
#: 0.810 with 0.5, 0.797 with 1.0), a section pulled onto the esophagus or the prevertebral tissue not.
LUMEN_INSIDE = 0.5
#: The descending aorta's centre lies at most this far in front of the vertebral body's front.
DESCENDING_AHEAD_MM = 30.0
#: ... and at most this far behind it (beside the vertebral body; the back muscles lie further back).
DESCENDING_BEHIND_MM = 25.0
#: Window (+-mm along z) of the running maximum of the spine's front that bounds the descending limb.
SPINE_FRONT_WINDOW_MM = 15.0
#: Aortic wall plus mural thrombus around the enhanced lumen, at most.
OUTER_EXTRA_MM = 10.0
#: The ascending aorta found from above the heart (``ABOVE_HEART_MM``) is seeded within this height under
#: the heart's top.
HEART_TOP_BAND_MM = 12.0


def aorta_enhanced(
    hu: np.ndarray,
    allowed: np.ndarray,
    others: np.ndarray,
    bone: np.ndarray,
    blood_hu: float,
    spine: SpineLine,
    spacing: Spacing,
    cfg: IntensityConfig,
) -> np.ndarray:
    """The aorta of a contrast CT: descending limb (down into the abdomen), arch and ascending limb.

    ``allowed`` is where the lumen may lie (body less lungs, airway and the vertebral column, whose
    spongy bone at a 3 mm grid has the density of contrast blood); ``others`` the heart (it touches
    the descending aorta's soft-tissue section); ``bone`` the dense bone (a centre of
    the soft-tissue track below the lumen may not lie in it); ``blood_hu`` the
    blood pool's median. The lumen threshold lies halfway between soft tissue and that median, so that
    the vessel wall and the fat around it are outside while a weakly enhanced aorta stays inside.
    """
    empty = np.zeros_like(allowed)
    if not spine.has.any():
        return empty
    threshold = lumen_threshold(blood_hu)
    lumen = allowed & (hu >= threshold) & (hu <= BLOOD_HU_MAX)
    if not lumen.any():
        return empty
    d2 = inplane_distance(lumen, spacing)
    peaks = distance_peaks(d2, LUMEN_RADIUS_MIN_MM)
    r_min, r_max = cfg.aorta_radius_mm
    seeds_ok = peaks & (d2 >= r_min) & (d2 <= r_max)
    # The descending limb stays beside the spine: its track may not run on over the arch into the
    # ascending aorta (which lies well in front of the spine's front).
    near = _near_spine(spine, lumen.shape, spacing)
    chain = best_track(seeds_ok & near, peaks & near, d2, spine, spacing, cfg)
    if len(chain) * spacing[2] < MIN_TRACK_MM:
        return empty
    radius = float(np.median([c[2] for c in chain.values()]))
    # The lumen may be narrowed by mural thrombus or a dissection, or mixed with unenhanced blood: the
    # vessel is the round soft-tissue section around it. The heart, which the descending aorta touches,
    # is not part of that soft tissue. The tube is tracked on it, up and down from the lumen track's
    # middle slice (re-centred on the soft tissue's own distance maximum near the lumen).
    vessel = allowed & ~others & (hu > cfg.fat_hu_max) & (hu <= BLOOD_HU_MAX)
    d_vessel = inplane_distance(vessel, spacing)
    outer = _recentre(chain, d_vessel, spacing)
    zs_chain = sorted(chain)
    z_mid = zs_chain[len(zs_chain) // 2]
    v_peaks = near & ~bone & distance_peaks(d_vessel, LUMEN_RADIUS_MIN_MM)
    sx, sy, _ = outer[z_mid]
    v_peaks[sx, sy, z_mid] = True
    # Bridging a slice is allowed only once, and a step down may not jump backwards: below the lungs the
    # vertebral body (not excluded there) is a round section of the aorta's size right behind it.
    # Above, the track ends at the lumen's top.
    tube = track_tube(
        v_peaks, d_vessel, (z_mid, sx, sy), spacing, cfg.aorta_step_mm, max_missed=1, back_mm=BACK_STEP_MM
    )
    tube = {z: c for z, c in tube.items() if z <= max(chain)}
    # The soft-tissue track's sections win: an eccentric lumen (thrombus) pulls its re-centred section
    # forwards. The lumen's sections fill the slices the soft-tissue track did not reach.
    outer = fill_gaps({**outer, **tube})
    # A thrombus or wall section surrounds the lumen it belongs to; a soft-tissue section that does not
    # contain the slice's lumen section was pulled away by a touching neighbour (esophagus, prevertebral
    # tissue): the lumen's section is taken there.
    outer = {z: contains_lumen(c, chain.get(z), spacing) for z, c in outer.items()}
    # Below the diaphragm the crus touches the soft-tissue section while the lumen is bright again: the
    # lumen track takes over where the soft-tissue track ends.
    more = _continue_down(outer, peaks & near, d2, spacing, cfg.aorta_step_mm)
    if more:
        outer = fill_gaps({**_recentre(more, d_vessel, spacing), **outer})
    # (the lumen as well: where the heart's regrowth took the descending aorta it touches, the vessel's
    # soft tissue excludes it; synthetic study 29 lost the lower descending aorta that way)
    out = tube_discs(smooth_chain(outer), d2.shape, spacing) & (vessel | lumen)
    # Arch: the thick core of the lumen above the level where the limbs part, connected to the track's
    # upper part. Great vessels (radius < 0.6x the aorta's) have no core and stay out.
    z_top = max(chain)
    k_arch = int(round(ARCH_DEPTH_MM / spacing[2]))
    band = np.zeros(lumen.shape[2], dtype=bool)
    band[max(z_top - k_arch, 0) : z_top + 1] = True
    core_r = cfg.aorta_core_ratio * radius
    d3 = ndimage.distance_transform_edt(lumen, sampling=spacing)
    seeds = np.zeros_like(lumen)
    for z, (cx, cy, _) in chain.items():
        if band[z]:
            seeds[cx, cy, z] = True
    core = components_touching((d3 >= core_r) & band[None, None, :], seeds)
    # Ascending limb: a tube in that core well in front of the descending one, followed downwards until
    # it widens into the left ventricle (no peak of similar radius within reach).
    asc = ascending_limb(core, peaks, d2, chain, spacing, cfg)
    asc = fill_gaps(asc) if asc else asc
    out |= tube_discs(asc, d2.shape, spacing)
    # Only the part of the core above the ascending limb's seed is arch; below it the core may reach
    # the pulmonary trunk or the heart.
    if asc:
        core &= np.arange(lumen.shape[2])[None, None, :] >= max(asc)
    out |= dilate_mm(core, core_r + 0.5 * max(spacing), spacing) & lumen
    return out & (lumen | vessel)


def contains_lumen(
    section: tuple[int, int, float], lumen: tuple[int, int, float] | None, spacing: Spacing
) -> tuple[int, int, float]:
    """``section``, or ``lumen`` when the lumen's disc is not inside it (``LUMEN_INSIDE``, one voxel)."""
    if lumen is None:
        return section
    off = float(np.hypot((section[0] - lumen[0]) * spacing[0], (section[1] - lumen[1]) * spacing[1]))
    return section if off + LUMEN_INSIDE * lumen[2] <= section[2] + max(spacing[0], spacing[1]) else lumen


def _continue_down(
    outer: Chain, peaks: np.ndarray, d2: np.ndarray, spacing: Spacing, step_mm: float
) -> Chain:
    """Lumen track below the lowest slice of ``outer``, from the lumen peak inside its lowest section."""
    low = min(outer)
    cx, cy, r = outer[low]
    for z in (low, low - 1):
        if z < 0:
            return {}
        px, py = np.nonzero(peaks[:, :, z])
        dd = np.hypot((px - cx) * spacing[0], (py - cy) * spacing[1])
        if (dd <= r).any():
            i = int(np.argmin(dd))
            chain = track_tube(
                peaks,
                d2,
                (z, int(px[i]), int(py[i])),
                spacing,
                step_mm,
                directions=(-1,),
                max_missed=1,
                back_mm=BACK_STEP_MM,
            )
            return {k: c for k, c in chain.items() if k < low}
    return {}


def _near_spine(
    spine: SpineLine, shape: tuple[int, ...], spacing: Spacing, behind_mm: float = DESCENDING_BEHIND_MM
) -> np.ndarray:
    """Voxels from ``behind_mm`` behind to ``DESCENDING_AHEAD_MM`` in front of the spine's front.

    Slices beyond the spine's known extent take the nearest known slice's front.
    """
    zs = np.flatnonzero(spine.has)
    near = zs[np.clip(np.searchsorted(zs, np.arange(shape[2])), 0, zs.size - 1)]
    # The front found by the walk only ever errs backwards (a disc, or a thin cortex at the grid ends
    # the walk at the neural arch), several slices in a row at a coarse z spacing; the vertebral
    # bodies' front changes slowly along z, so the band follows its running maximum.
    k = max(1, int(round(SPINE_FRONT_WINDOW_MM / spacing[2])))
    y_f = ndimage.maximum_filter1d(spine.y_f[near], size=2 * k + 1, mode="nearest")
    y = np.arange(shape[1])[:, None]
    ahead = y <= (y_f + DESCENDING_AHEAD_MM / spacing[1])[None, :]
    return (ahead & (y >= (y_f - behind_mm / spacing[1])[None, :]))[None, :, :]


def _recentre(chain: Chain, d_vessel: np.ndarray, spacing: Spacing) -> Chain:
    """Per slice, the soft-tissue distance maximum within the lumen's radius of the lumen's centre.

    Its radius is at most ``OUTER_EXTRA_MM`` more than the lumen's (the wall and a thrombus; beyond
    that the soft tissue is a neighbour touching the vessel).
    """
    out: Chain = {}
    for z, (cx, cy, r) in chain.items():
        disc = disc_mm(d_vessel.shape, (cx * spacing[0], cy * spacing[1]), r, spacing)
        d = np.where(disc, d_vessel[:, :, z], -1.0)
        i, j = np.unravel_index(int(np.argmax(d)), d.shape)
        out[z] = (int(i), int(j), float(min(max(d[i, j], r), r + OUTER_EXTRA_MM)))
    return out


def ascending_from_above(
    hu: np.ndarray,
    allowed: np.ndarray,
    heart: np.ndarray,
    blood_hu: float,
    spacing: Spacing,
    cfg: IntensityConfig,
) -> np.ndarray:
    """The ascending aorta of a contrast CT as a lumen tube through the heart's top, without a spine seed.

    Used where the descending aorta was not found (the spine is outside a crop). The heart's regrowth
    takes the ascending aorta's lower part; it is a round lumen of aortic radius in the heart's top
    slices that goes on upwards as a vertical tube for at least ``ABOVE_HEART_MM`` (to the arch). The
    pulmonary trunk ends at its bifurcation just above the heart (its branches run sideways) and the
    atria end there too, so only the aorta and the superior vena cava qualify; of these the one of the
    largest radius is the aorta. Tracked down until it opens into the left ventricle (radius ratio
    ``ASCENDING_RATIO`` per slice); returns its discs (one voxel of wall added) within ``allowed``.
    """
    empty = np.zeros_like(allowed)
    zs = np.flatnonzero(heart.any(axis=(0, 1)))
    if zs.size == 0:
        return empty
    z_top = int(zs[-1])
    k_above = int(round(ABOVE_HEART_MM / spacing[2]))
    if z_top + k_above >= hu.shape[2]:
        return empty
    lumen = allowed & (hu >= lumen_threshold(blood_hu)) & (hu <= BLOOD_HU_MAX)
    d2 = inplane_distance(lumen, spacing)
    peaks = distance_peaks(d2, LUMEN_RADIUS_MIN_MM)
    r_min, r_max = cfg.aorta_radius_mm
    k_band = max(1, int(round(HEART_TOP_BAND_MM / spacing[2])))
    best: Chain = {}
    best_r = 0.0
    listed = SlicePeaks(peaks)
    for z in range(z_top, max(z_top - k_band, -1), -1):
        px, py = np.nonzero(peaks[:, :, z] & heart[:, :, z] & (d2[:, :, z] >= r_min) & (d2[:, :, z] <= r_max))
        for i in np.argsort(-d2[px, py, z], kind="stable"):
            r0 = float(d2[px[i], py[i], z])
            if r0 <= best_r:
                break
            chain = track_ascending((z, int(px[i]), int(py[i])), r0, listed, d2, spacing, cfg, max_missed=1)
            if max(chain) < z_top + k_above:
                continue
            best, best_r = chain, float(np.median([c[2] for c in chain.values()]))
    if not best:
        return empty
    return tube_discs(smooth_chain(fill_gaps(best)), hu.shape, spacing, pad=1.0) & allowed
