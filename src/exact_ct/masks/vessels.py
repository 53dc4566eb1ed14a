"""Aorta (and the contrast heart's vessel-aware refinements) of the intensity backend, as tracked tubes.

In contrast CT (blood pool > ``CONTRAST_BLOOD_HU``) the aorta's lumen is brighter than every soft tissue:
it is tracked slice by slice as the local maximum of the in-plane distance map of the blood-pool mask,
from the descending aorta beside the spine up to the arch and down through the hiatus into the abdomen;
the arch is the thick 3-D core connected to that track above the level where the two limbs part, and
the ascending aorta is tracked down from the arch until it widens into the left ventricle. Where the
lumen is narrowed (mural thrombus, a dissection, unenhanced blood mixing in), the vessel is the round
soft-tissue section around it, tracked on its own. Without contrast the aorta is soft tissue like its
neighbours: the intensity backend searches the mediastinum first, and where that finds nothing (a scan
of the lung bases and upper abdomen) ``aorta_unenhanced`` follows the soft-tissue tube in front of
the spine. In contrast CT the heart is also refined here: the ascending aorta found from above the
heart where no descending limb is (a crop without spine), the heart's lower part followed under the
mediastinal floor as enhanced blood, and the ventricles' wall against the lung below the aortic root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from exact_ct.masks.morph import Spacing, between, components_touching, dilate_mm, hull_2d, inplane_distance

if TYPE_CHECKING:
    from exact_ct.masks.config import IntensityConfig
    from exact_ct.masks.intensity import SpineLine

#: A heart (blood pool and myocardium) whose median is above this is contrast-enhanced: unenhanced
#: blood and myocardium lie at 30-60 HU, arterial or venous phase blood at 150-500 HU.
CONTRAST_BLOOD_HU = 120.0
#: Soft tissue around the vessels (myocardium, vessel wall, unenhanced blood) in HU.
SOFT_TISSUE_HU = 40.0
#: Densest contrast blood at the working grid; cortical bone and metal are brighter.
BLOOD_HU_MAX = 900.0
#: Smallest in-plane lumen radius followed by the track (the abdominal aorta narrows to about 7 mm).
LUMEN_RADIUS_MIN_MM = 4.5
#: The ascending aorta lies at least this far in front of the descending aorta.
ASCENDING_AHEAD_MM = 25.0
#: ... and at most this far (beyond lies the sternum).
ASCENDING_AHEAD_MAX_MM = 100.0
#: The ascending aorta lies about this far right of the descending aorta (RAS+: larger x).
ASCENDING_RIGHT_MM = 20.0
ASCENDING_RIGHT_TOL_MM = 25.0
#: A soft-tissue section belongs to the lumen it surrounds only if the lumen's disc lies inside it up to
#: this share of its radius (and one voxel): an eccentric lumen in a thrombus still does (aorta_report:
#: 0.810 with 0.5, 0.797 with 1.0), a section pulled onto the esophagus or the prevertebral tissue not.
LUMEN_INSIDE = 0.5
#: Radius ratio from one slice to the next along the ascending aorta.
ASCENDING_RATIO = (0.75, 1.33)
#: ... and its radius stays below this many times the descending aorta's (or the seed's, if larger).
ASCENDING_MAX_RATIO = 1.6
#: A track of the ascending aorta from the arch reaches at least this far down (else another seed).
ASCENDING_MIN_MM = 20.0
#: The two limbs are looked for below the arch, within this height under the track's top.
ARCH_DEPTH_MM = 45.0
#: The descending aorta's centre lies at most this far in front of the vertebral body's front.
DESCENDING_AHEAD_MM = 30.0
#: ... and at most this far behind it (beside the vertebral body; the back muscles lie further back).
DESCENDING_BEHIND_MM = 25.0
#: Window (+-mm along z) of the running maximum of the spine's front that bounds the descending limb.
SPINE_FRONT_WINDOW_MM = 15.0
#: Going down, the descending aorta follows the spine forwards into the lumbar lordosis: a step down
#: moves its centre at most this far backwards.
BACK_STEP_MM = 3.0
#: Aortic wall plus mural thrombus around the enhanced lumen, at most.
OUTER_EXTRA_MM = 10.0

#: From the diaphragm down the aorta lies on the left front of the vertebral body: its centre about
#: this far left of / in front of the spine's midline and front.
LOW_AORTA_OFFSET_MM = (10.0, 20.0)
LOW_AORTA_SEARCH_MM = 20.0
LOW_AORTA_AHEAD_MM = 40.0
#: Unenhanced blood and vessel wall are below this (a voxel brighter is bone or calcification).
UNENHANCED_HU_MAX = 150.0

#: The ascending aorta found from above the heart must run at least this far above the heart's top
#: (the pulmonary trunk ends at its bifurcation just above it; the aorta rises to the arch).
ABOVE_HEART_MM = 15.0
#: ... and be seeded within this height under the heart's top.
HEART_TOP_BAND_MM = 12.0
#: Myocardium of the heart's inferior wall around the enhanced blood pool's outline, at most.
MYOCARDIUM_MM = 8.0
#: The heart is followed at most this far under its lowest slice.
BELOW_FLOOR_MAX_MM = 60.0
#: The ventricles' wall (and pericardium) between the heart's blood pool and the lung, at most.
VENTRICLE_WALL_MM = 10.0
#: ... it lies against the lung: within this distance of it.
LUNG_CONTACT_MM = 6.0

Chain = dict[int, tuple[int, int, float]]


def blood_pool_hu(hu: np.ndarray, heart: np.ndarray) -> float | None:
    """Median HU of the heart mask (blood pool and myocardium), or None without a heart."""
    if not heart.any():
        return None
    return float(np.median(hu[heart]))


def lumen_threshold(blood_hu: float) -> float:
    """HU halfway between soft tissue and the blood pool: the enhanced lumen lies above it."""
    return 0.5 * (blood_hu + SOFT_TISSUE_HU)


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
    peaks = (d2 >= LUMEN_RADIUS_MIN_MM) & (d2 == ndimage.maximum_filter(d2, size=(3, 3, 1)))
    r_min, r_max = cfg.aorta_radius_mm
    seeds_ok = peaks & (d2 >= r_min) & (d2 <= r_max)
    # The descending limb stays beside the spine: its track may not run on over the arch into the
    # ascending aorta (which lies well in front of the spine's front).
    near = _near_spine(spine, lumen.shape, spacing)
    chain = _best_track(seeds_ok & near, peaks & near, d2, spine, spacing, cfg)
    if len(chain) * spacing[2] < 30.0:
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
    v_peaks = near & ~bone & (d_vessel >= LUMEN_RADIUS_MIN_MM)
    v_peaks &= d_vessel == ndimage.maximum_filter(d_vessel, size=(3, 3, 1))
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
    outer = _fill_gaps({**outer, **tube})
    # A thrombus or wall section surrounds the lumen it belongs to; a soft-tissue section that does not
    # contain the slice's lumen section was pulled away by a touching neighbour (esophagus, prevertebral
    # tissue): the lumen's section is taken there.
    outer = {z: _contains_lumen(c, chain.get(z), spacing) for z, c in outer.items()}
    # Below the diaphragm the crus touches the soft-tissue section while the lumen is bright again: the
    # lumen track takes over where the soft-tissue track ends.
    more = _continue_down(outer, peaks & near, d2, spacing, cfg.aorta_step_mm)
    if more:
        outer = _fill_gaps({**_recentre(more, d_vessel, spacing), **outer})
    # (the lumen as well: where the heart's regrowth took the descending aorta it touches, the vessel's
    # soft tissue excludes it; synthetic study 29 lost the lower descending aorta that way)
    out = tube_discs(_smooth(outer), d2.shape, spacing) & (vessel | lumen)
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
    asc = _fill_gaps(asc) if asc else asc
    out |= tube_discs(asc, d2.shape, spacing)
    # Only the part of the core above the ascending limb's seed is arch; below it the core may reach
    # the pulmonary trunk or the heart.
    if asc:
        core &= np.arange(lumen.shape[2])[None, None, :] >= max(asc)
    out |= dilate_mm(core, core_r + 0.5 * max(spacing), spacing) & lumen
    return out & (lumen | vessel)


def _contains_lumen(
    section: tuple[int, int, float], lumen: tuple[int, int, float] | None, spacing: Spacing
) -> tuple[int, int, float]:
    """``section``, or ``lumen`` when the lumen's disc is not inside it (``LUMEN_INSIDE``, one voxel)."""
    if lumen is None:
        return section
    off = float(np.hypot((section[0] - lumen[0]) * spacing[0], (section[1] - lumen[1]) * spacing[1]))
    return section if off + LUMEN_INSIDE * lumen[2] <= section[2] + max(spacing[0], spacing[1]) else lumen


def _smooth(chain: Chain, size: int = 5) -> Chain:
    """Running median of centre and radius along z over ``size`` slices.

    A slice where the track took a neighbour (or followed a narrowed lumen) is an outlier of a tube
    that changes slowly.
    """
    zs = sorted(chain)
    cols = [
        ndimage.median_filter(np.array([chain[z][k] for z in zs], float), size=size, mode="nearest")
        for k in range(3)
    ]
    return {z: (int(round(x)), int(round(y)), float(r)) for z, x, y, r in zip(zs, *cols, strict=True)}


def root_extension(chain: Chain, length_mm: float, spacing: Spacing, fit_mm: float = 15.0) -> Chain:
    """The aortic root: the ascending tube continued ``length_mm`` below its lowest tracked slice.

    In unenhanced CT the ascending aorta's track ends where the tube enters the heart's outline (blood,
    myocardium and the atria have one density, so there is no edge), while the root runs on inside the
    outline down to the aortic valve. (With contrast the track runs on inside the outline until the
    lumen opens into the left ventricle's blood, i.e. to the valve: no extension there.) Its centre
    follows the straight line fitted to the track's lowest ``fit_mm`` (in-plane slope at most 1 mm per
    mm), its radius the median radius there.
    """
    if not chain or length_mm <= 0:
        return {}
    zs = sorted(chain)
    low = [z for z in zs if (z - zs[0]) * spacing[2] <= fit_mm]
    xyz = np.array([(chain[z][0] * spacing[0], chain[z][1] * spacing[1], z * spacing[2]) for z in low])
    radius = float(np.median([chain[z][2] for z in low]))
    slope = np.zeros(2)
    if len(low) >= 3:
        slope = np.polyfit(xyz[:, 2], xyz[:, :2], 1)[0]
        slope = np.clip(slope, -1.0, 1.0)
    x0, y0, z0 = xyz[0]
    out: Chain = {}
    for k in range(1, int(round(length_mm / spacing[2])) + 1):
        z = zs[0] - k
        if z < 0:
            break
        dz = z * spacing[2] - z0
        out[z] = (
            int(round((x0 + slope[0] * dz) / spacing[0])),
            int(round((y0 + slope[1] * dz) / spacing[1])),
            radius,
        )
    return out


def _fill_gaps(chain: Chain) -> Chain:
    """Centre and radius interpolated linearly in the slices a track bridged."""
    zs = np.array(sorted(chain))
    full = np.arange(zs[0], zs[-1] + 1)
    cols = [np.interp(full, zs, [chain[z][k] for z in zs]) for k in range(3)]
    return {int(z): (int(round(x)), int(round(y)), float(r)) for z, x, y, r in zip(full, *cols, strict=True)}


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
    peaks = box[:, :, None] & (d2 >= LUMEN_RADIUS_MIN_MM)
    peaks &= d2 == ndimage.maximum_filter(d2, size=(3, 3, 1))
    r_min, r_max = cfg.aorta_radius_mm
    chain = _best_track(
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
    if len(chain) * spacing[2] < 30.0:
        return empty
    # (the soft-tissue section already holds the wall: the distance map's half voxel beyond the edge is
    # taken off)
    return tube_discs(_smooth(_fill_gaps(chain)), d2.shape, spacing, pad=-0.5) & vessel


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
    gx = np.arange(d_vessel.shape[0])[:, None] * spacing[0]
    gy = np.arange(d_vessel.shape[1])[None, :] * spacing[1]
    for z, (cx, cy, r) in chain.items():
        disc = (gx - cx * spacing[0]) ** 2 + (gy - cy * spacing[1]) ** 2 <= r * r
        d = np.where(disc, d_vessel[:, :, z], -1.0)
        i, j = np.unravel_index(int(np.argmax(d)), d.shape)
        out[z] = (int(i), int(j), float(min(max(d[i, j], r), r + OUTER_EXTRA_MM)))
    return out


def _best_track(
    seeds_ok: np.ndarray,
    peaks: np.ndarray,
    d2: np.ndarray,
    spine: SpineLine,
    spacing: Spacing,
    cfg: IntensityConfig,
    offset_mm: tuple[float, float] | None = None,
    search_mm: float | None = None,
    **track: Any,
) -> Chain:
    """Longest tube track seeded within ``search_mm`` of the descending aorta's expected centre.

    The expected centre is ``offset_mm`` (default ``aorta_offset_mm``) left of / in front of the
    vertebral body in every slice where the spine is seen; ``track`` goes to :func:`track_tube`. Ties
    go to the seed nearest that centre.
    """
    has, x_c, y_f = spine.has, spine.x_c, spine.y_f
    offset = offset_mm or cfg.aorta_offset_mm
    search = search_mm or cfg.aorta_search_mm
    zs = np.flatnonzero(has & seeds_ok.any(axis=(0, 1)))
    best: Chain = {}
    best_key = (0.0, 0.0)
    tried = np.zeros(peaks.shape, dtype=bool)
    listed = SlicePeaks(peaks)
    for z0 in zs:
        ex = x_c[z0] - offset[0] / spacing[0]
        ey = y_f[z0] + offset[1] / spacing[1]
        px, py = np.nonzero(seeds_ok[:, :, z0])
        dist = np.hypot((px - ex) * spacing[0], (py - ey) * spacing[1])
        for i in np.flatnonzero(dist <= search):
            if tried[px[i], py[i], z0]:
                continue  # already part of a track
            chain = track_tube(
                listed, d2, (int(z0), int(px[i]), int(py[i])), spacing, cfg.aorta_step_mm, **track
            )
            for z, (cx, cy, _) in chain.items():
                tried[cx, cy, z] = True
            key = (float(len(chain)), -float(dist[i]))
            if key > best_key:
                best, best_key = chain, key
    return best


def ascending_limb(
    core: np.ndarray, peaks: np.ndarray, d2: np.ndarray, desc: Chain, spacing: Spacing, cfg: IntensityConfig
) -> Chain:
    """The ascending aorta, tracked down from the arch; empty when none is found.

    Its seed is the highest peak of aortic radius inside the arch core that lies at least
    ``ASCENDING_AHEAD_MM`` in front of the descending limb in its slice. Where the arch is too thin to
    keep a core (or is partly out of the field of view), the seed is the highest such peak within
    ``ARCH_DEPTH_MM`` below the descending limb's top whose x lies within ``ASCENDING_RIGHT_TOL_MM`` of
    ``ASCENDING_RIGHT_MM`` right of the descending limb (the superior vena cava lies further right).
    Seeds of at least ``ASCENDING_RATIO[0]`` x the descending radius (the ascending aorta is the wider
    limb) are tried from the top down; the first whose track reaches ``ASCENDING_MIN_MM`` down is taken
    (at the arch's top a section narrower than the tube below stops the radius-ratio track at once),
    else the longest track.
    """
    radius = float(np.median([c[2] for c in desc.values()]))
    sized = peaks & (d2 >= ASCENDING_RATIO[0] * radius) & (d2 <= ASCENDING_MAX_RATIO * radius)
    top = max(desc)
    k_arch = int(round(ARCH_DEPTH_MM / spacing[2]))
    best: Chain = {}
    listed = SlicePeaks(peaks)
    for in_core in (True, False):
        cand = sized & core if in_core else sized
        for z in sorted((z for z in desc if z >= top - k_arch and cand[:, :, z].any()), reverse=True):
            px, py = np.nonzero(cand[:, :, z])
            ahead = (py - desc[z][1]) * spacing[1]
            ok = (ahead >= ASCENDING_AHEAD_MM) & (ahead <= ASCENDING_AHEAD_MAX_MM)
            if not ok.any():
                continue
            if not in_core:
                ok &= np.abs((px - desc[z][0]) * spacing[0] - ASCENDING_RIGHT_MM) <= ASCENDING_RIGHT_TOL_MM
                if not ok.any():
                    continue
            i = int(np.flatnonzero(ok)[np.argmax(d2[px[ok], py[ok], z])])
            # The ascending aorta keeps its calibre down to the root; the left ventricle (or, in a
            # crop, the heart) it opens into is much wider: a tighter radius ratio ends the track there.
            chain = track_tube(
                listed,
                d2,
                (z, int(px[i]), int(py[i])),
                spacing,
                cfg.aorta_step_mm,
                directions=(-1,),
                ratio=ASCENDING_RATIO,
                max_radius=ASCENDING_MAX_RATIO * max(radius, float(d2[px[i], py[i], z])),
            )
            if (max(chain) - min(chain) + 1) * spacing[2] >= ASCENDING_MIN_MM:
                return chain
            if len(chain) > len(best):
                best = chain
        if best:
            return best
    return {}


class SlicePeaks:
    """The voxels of a 3-D peak mask listed per axial slice, from one ``np.nonzero`` of the whole volume.

    :func:`track_tube` looks up the peaks of one slice at every step, and a seed search runs hundreds of
    tracks over the same mask: a ``np.nonzero`` of a strided (x, y) slice each time cost seconds there.
    ``in_slice(z)`` gives the same coordinates, in the same order, as ``np.nonzero(mask[:, :, z])``.
    """

    def __init__(self, mask: np.ndarray) -> None:
        x, y, z = np.nonzero(mask)
        order = np.argsort(z, kind="stable")  # stable: x-major order within a slice, as np.nonzero
        self._x, self._y = x[order], y[order]
        self._bounds = np.searchsorted(z[order], np.arange(mask.shape[2] + 1))
        self.shape = mask.shape

    def in_slice(self, z: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self._bounds[z], self._bounds[z + 1]
        return self._x[lo:hi], self._y[lo:hi]


def track_tube(
    peaks: np.ndarray | SlicePeaks,
    d2: np.ndarray,
    seed: tuple[int, int, int],
    spacing: Spacing,
    step_mm: float,
    directions: tuple[int, ...] = (1, -1),
    max_missed: int = 2,
    back_mm: float | None = None,
    ratio: tuple[float, float] = (0.6, 1.6),
    max_radius: float = np.inf,
) -> Chain:
    """Centres (x, y, in-plane radius) per slice of a tube followed up and down from ``seed`` (z, x, y).

    Each step takes the nearest peak within ``step_mm`` whose radius is ``ratio`` (0.6-1.6) x the last
    one (and at most ``max_radius``); up to
    ``max_missed`` slices without such a peak are bridged (the tube touching a neighbour there). With
    ``back_mm``, a step downwards may move the centre at most that far backwards (posterior). Callers that
    track many seeds over one mask pass it as :class:`SlicePeaks`.
    """
    if not isinstance(peaks, SlicePeaks):
        peaks = SlicePeaks(peaks)
    z0, x0, y0 = seed
    chain = {z0: (x0, y0, float(d2[x0, y0, z0]))}
    for direction in directions:
        cx, cy, r = chain[z0]
        z, missed = z0 + direction, 0
        while 0 <= z < peaks.shape[2] and missed <= max_missed:
            px, py = peaks.in_slice(z)
            dd = np.hypot((px - cx) * spacing[0], (py - cy) * spacing[1])
            rr = d2[px, py, z]
            ok = (dd <= step_mm * (1 + missed)) & (rr >= ratio[0] * r) & (rr <= min(ratio[1] * r, max_radius))
            if back_mm is not None and direction < 0:
                ok &= (py - cy) * spacing[1] >= -back_mm * (1 + missed)
            if ok.any():
                j = int(np.flatnonzero(ok)[np.argmin(dd[ok])])
                cx, cy, r = int(px[j]), int(py[j]), float(rr[j])
                chain[z] = (cx, cy, r)
                missed = 0
            else:
                missed += 1
            z += direction
    return chain


def tube_discs(chain: Chain, shape: tuple[int, ...], spacing: Spacing, pad: float = 0.5) -> np.ndarray:
    """Union of the tracked in-plane discs (centre and in-plane radius per slice).

    The radius is the distance map's value plus ``pad`` voxels: that value is the distance to the
    nearest outside voxel's centre, half a voxel beyond the edge; +0.5 also takes the wall.
    """
    out = np.zeros(shape, dtype=bool)
    gx = np.arange(shape[0])[:, None] * spacing[0]
    gy = np.arange(shape[1])[None, :] * spacing[1]
    for z, (cx, cy, r) in chain.items():
        rr = r + pad * max(spacing[0], spacing[1])
        out[:, :, z] = (gx - cx * spacing[0]) ** 2 + (gy - cy * spacing[1]) ** 2 <= rr * rr
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
    peaks = (d2 >= LUMEN_RADIUS_MIN_MM) & (d2 == ndimage.maximum_filter(d2, size=(3, 3, 1)))
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
            chain = track_tube(
                listed,
                d2,
                (z, int(px[i]), int(py[i])),
                spacing,
                cfg.aorta_step_mm,
                max_missed=1,
                ratio=ASCENDING_RATIO,
                max_radius=ASCENDING_MAX_RATIO * r0,
            )
            if max(chain) < z_top + k_above:
                continue
            best, best_r = chain, float(np.median([c[2] for c in chain.values()]))
    if not best:
        return empty
    return tube_discs(_smooth(_fill_gaps(best)), hu.shape, spacing, pad=1.0) & allowed


def heart_below_floor(
    hu: np.ndarray, heart: np.ndarray, tissue: np.ndarray, blood_hu: float, spacing: Spacing
) -> np.ndarray:
    """The lower part of a contrast-enhanced heart that the mediastinal floor cut off; the added voxels.

    The floor (lung on both sides) runs above the heart's inferior wall where the heart sits low on
    the diaphragm. Under the heart's lowest voxel of each (x, y) column, within the heart's axial
    footprint (it narrows towards the diaphragm and apex), the enhanced blood pool connected to the
    heart's own is the ventricles' and atria's lower part; the soft tissue (``tissue``) within
    ``MYOCARDIUM_MM`` of its convex outline in the slice is their wall. The liver and stomach under the
    heart are not enhanced like blood, so the growth stops at the diaphragm.
    """
    added = np.zeros_like(heart)
    zs = np.flatnonzero(heart.any(axis=(0, 1)))
    if zs.size == 0:
        return added
    bright = tissue & (hu >= lumen_threshold(blood_hu)) & (hu <= BLOOD_HU_MAX)
    seed = heart & bright
    if not seed.any():
        return added
    nz = heart.shape[2]
    foot = heart.any(axis=2)
    low = np.where(foot, np.argmax(heart, axis=2), 0)
    z = np.arange(nz)[None, None, :]
    z_min = max(int(zs[0]) - int(round(BELOW_FLOOR_MAX_MM / spacing[2])), 0)
    under = foot[:, :, None] & (z < low[:, :, None]) & (z >= z_min)
    cand = bright & under
    if not cand.any():
        return added
    blood = components_touching(cand | seed, seed) & cand
    if not blood.any():
        return added
    # The wall lies around the blood pools' convex outline (the septum inside it); the liver beside a
    # small blood pool (the inferior vena cava's entry) lies beyond it.
    near = inplane_distance(~hull_2d(blood), spacing) <= MYOCARDIUM_MM
    return (blood | (tissue & under & near)) & ~heart


def ventricle_wall(
    heart: np.ndarray, tissue: np.ndarray, lungs: np.ndarray, aorta: np.ndarray, spacing: Spacing
) -> np.ndarray:
    """Soft tissue between the ventricles and the lung that the heart's opening cut; the added voxels.

    The heart is regrown from its eroded core by up to 30 mm (an opening), which cuts the wedge of
    the apex and the left ventricle's lateral wall where the heart narrows against the lung. Below the
    aortic root (the lowest slice of ``aorta`` over the heart) the heart is the ventricles, whose wall
    is up to ``VENTRICLE_WALL_MM`` thick: ``tissue`` within that of the heart and within
    ``LUNG_CONTACT_MM`` of a lung that lies between heart and lung along its row (so never the posterior
    mediastinum behind the heart), connected to the heart, is taken. Above the root the atria and great
    vessels touch the lung too, so nothing is added there. Where a descending aorta lies behind the
    heart, its lowest slice over the heart's footprint is taken for the root and little is added.
    """
    empty = np.zeros_like(heart)
    over = aorta & heart.any(axis=2)[:, :, None]
    if not heart.any() or not over.any():
        return empty
    z_root = int(np.flatnonzero(over.any(axis=(0, 1)))[0])
    below = np.arange(heart.shape[2])[None, None, :] < z_root
    wall = tissue & below & ~heart & dilate_mm(heart, VENTRICLE_WALL_MM, spacing)
    wall &= dilate_mm(lungs, LUNG_CONTACT_MM, spacing)
    wall &= between(lungs, heart, axis=0) | between(heart, lungs, axis=0)
    return components_touching(wall | heart, heart) & wall
