"""Aorta tracks shared by the contrast and the unenhanced search: descending seed search, ascending limb, root."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from exact_ct.masks.morph import Spacing
from exact_ct.masks.tubes import Chain, SlicePeaks, track_tube

if TYPE_CHECKING:
    from exact_ct.masks.config import IntensityConfig
    from exact_ct.masks.steps.spine import SpineLine

#: Smallest in-plane lumen radius followed by the track (the abdominal aorta narrows to about 7 mm).
LUMEN_RADIUS_MIN_MM = 4.5
#: The ascending aorta lies at least this far in front of the descending aorta.
ASCENDING_AHEAD_MM = 25.0
#: ... and at most this far (beyond lies the sternum).
ASCENDING_AHEAD_MAX_MM = 100.0
#: The ascending aorta lies about this far right of the descending aorta (RAS+: larger x).
ASCENDING_RIGHT_MM = 20.0
ASCENDING_RIGHT_TOL_MM = 25.0
#: Radius ratio from one slice to the next along the ascending aorta.
ASCENDING_RATIO = (0.75, 1.33)
#: ... and its radius stays below this many times the descending aorta's (or the seed's, if larger).
ASCENDING_MAX_RATIO = 1.6
#: A track of the ascending aorta from the arch reaches at least this far down (else another seed).
ASCENDING_MIN_MM = 20.0
#: The two limbs are looked for below the arch, within this height under the track's top.
ARCH_DEPTH_MM = 45.0
#: Going down, the descending aorta follows the spine forwards into the lumbar lordosis: a step down
#: moves its centre at most this far backwards.
BACK_STEP_MM = 3.0
#: The ascending aorta found from above the heart must run at least this far above the heart's top
#: (the pulmonary trunk ends at its bifurcation just above it; the aorta rises to the arch).
ABOVE_HEART_MM = 15.0
#: A descending track shorter than this (mm) is not the aorta.
MIN_TRACK_MM = 30.0


def best_track(
    seeds_ok: np.ndarray,
    peaks: np.ndarray,
    d2: np.ndarray,
    spine: SpineLine,
    spacing: Spacing,
    cfg: IntensityConfig,
    offset_mm: tuple[float, float] | None = None,
    search_mm: float | None = None,
    reject: Callable[[Chain], bool] | None = None,
    **track: Any,
) -> Chain:
    """Longest tube track seeded within ``search_mm`` of the descending aorta's expected centre.

    The expected centre is ``offset_mm`` (default ``aorta_offset_mm``) left of / in front of the
    vertebral body in every slice where the spine is seen; ``track`` goes to :func:`track_tube`. Ties
    go to the seed nearest that centre. A track that ``reject`` returns True for is not taken (its
    centres are still not tried again as seeds).
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
            if reject is not None and reject(chain):
                continue
            key = (float(len(chain)), -float(dist[i]))
            if key > best_key:
                best, best_key = chain, key
    return best


def track_ascending(
    seed: tuple[int, int, int],
    radius: float,
    peaks: SlicePeaks,
    d2: np.ndarray,
    spacing: Spacing,
    cfg: IntensityConfig,
    **track: Any,
) -> Chain:
    """The ascending aorta tracked from ``seed`` (z, x, y) through ``peaks`` of the distance map ``d2``.

    The ascending aorta keeps its calibre down to the root; the left ventricle (or, in a crop, the heart)
    it opens into is much wider: the radius may change by ``ASCENDING_RATIO`` per slice and stays at most
    ``ASCENDING_MAX_RATIO`` x ``radius``. ``track`` (directions, max_missed) goes to :func:`track_tube`.
    """
    max_radius = ASCENDING_MAX_RATIO * radius
    return track_tube(
        peaks, d2, seed, spacing, cfg.aorta_step_mm, ratio=ASCENDING_RATIO, max_radius=max_radius, **track
    )


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
            # a tighter radius ratio ends the track where it opens into the left ventricle
            r_seed = max(radius, float(d2[px[i], py[i], z]))
            chain = track_ascending(
                (z, int(px[i]), int(py[i])), r_seed, listed, d2, spacing, cfg, directions=(-1,)
            )
            if (max(chain) - min(chain) + 1) * spacing[2] >= ASCENDING_MIN_MM:
                return chain
            if len(chain) > len(best):
                best = chain
        if best:
            return best
    return {}


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
