"""Main bronchi followed on along their axis into the hilum, where the slice-by-slice tracker loses them."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.hu import BRONCHUS_CONTRAST_HU
from exact_ct.masks.morph import CROSS_2D, Spacing
from exact_ct.masks.steps.airway_wall import WALL_MM

#: Adult main bronchi, carina to the first lobar branch: right about 25 mm, left about 50 mm (the left
#: passes under the aortic arch). Lengths of the anatomy, not of any scan.
RIGHT_MAIN_BRONCHUS_MM, LEFT_MAIN_BRONCHUS_MM = 25.0, 50.0
#: Sections of the tracked bronchus that fix its axis.
_AXIS_SECTIONS = 3
#: On the axis, the section is looked for in a window of the bronchus's radius, its wall and this many
#: voxels; the ring around it is this many voxels wide; the slice is smoothed by this sigma (voxels).
WINDOW_MARGIN_VOXELS = 2.5
RING_VOXELS = 1.5
SMOOTH_SIGMA_VOXELS = 0.7


def extend_main_bronchi(
    lumen: np.ndarray,
    hu: np.ndarray,
    air: np.ndarray,
    spacing: Spacing,
    lengths_mm: tuple[float, float] = (RIGHT_MAIN_BRONCHUS_MM, LEFT_MAIN_BRONCHUS_MM),
    contrast_hu: float = BRONCHUS_CONTRAST_HU,
) -> np.ndarray:
    """Each main bronchus followed along its axis past the slice where its tracking stopped.

    Where a main bronchus enters the lung at the hilum its lumen (-1000 HU) is only a little darker
    than the aerated lung around it (-850 HU), and at a coarse grid its thin wall no longer separates
    the two: the lumen's air joins the lung's and a slice-by-slice tracker loses it. The bronchus is
    still a straight tube there, so it is continued along the line fitted through the centroids of its
    last tracked sections: in each next slice the darkest point near the predicted centre is its lumen
    when it is darker than the ring around it (wall and lung, at the bronchus' radius plus the wall)
    by ``contrast_hu``, and the section is the part of a disc of the bronchus' radius darker than the
    midpoint between the two. The continuation stops where that test fails or where the section lies
    farther from the carina than the anatomical main-bronchus length (``lengths_mm``: right, left);
    beyond it the lobar bronchi belong to the lung.

    Args:
        lumen: tracked lumen of trachea and main bronchi, bool (x, y, z), RAS+ (patient's left at low x).
        hu: the CT volume in HU on the same grid.
        air: every air voxel; the continued lumen stays within it.
        spacing: voxel size (mm).
        lengths_mm: main-bronchus length (right, left) measured from the carina.
        contrast_hu: how much darker than its ring the lumen's core must be.

    Returns:
        The lumen with the continued sections added (a superset of ``lumen``).
    """
    out = lumen.copy()
    found = _carina(lumen, spacing)
    if found is None:
        return out
    z_first, carina = found
    px = np.asarray(spacing[:2], dtype=np.float64)
    for side, length in ((1, lengths_mm[0]), (-1, lengths_mm[1])):
        track = _bronchus_track(lumen, z_first, carina, side, spacing)
        if not track:
            continue
        radius = float(np.sqrt(np.median([a for _, _, a in track]) / np.pi))
        # the axis through the bronchus' own sections: at a coarse grid the carina point (the centroid of
        # the merged section above the split) lies off both axes; it is used only for a one-section track
        pts = [(z * spacing[2], c) for z, c, _ in track]
        if len(pts) < 2:
            pts.insert(0, (carina[2], carina[:2]))
        zz = np.array([p[0] for p in pts[-_AXIS_SECTIONS:]])
        cc = np.array([p[1] for p in pts[-_AXIS_SECTIONS:]])
        # in-plane shift of the axis per mm of z (least squares through the last sections)
        slope = np.polyfit(zz, cc, 1)[0]
        z, centre = track[-1][0], track[-1][1]
        while z - 1 >= 0:
            z -= 1
            centre = centre - slope * spacing[2]
            if np.linalg.norm(np.append(centre, z * spacing[2]) - carina) > length:
                break
            sec = _section_on_axis(hu[:, :, z], air[:, :, z], centre, radius, px, contrast_hu)
            if sec is None:
                break
            out[:, :, z] |= sec
            centre = np.array(ndimage.center_of_mass(sec)) * px
    return out


def _carina(lumen: np.ndarray, spacing: Spacing) -> tuple[int, np.ndarray] | None:
    """The first slice (from the top) where the lumen splits in two, and the carina point (mm) just above it."""
    zs = np.flatnonzero(lumen.any(axis=(0, 1)))
    for z in zs[::-1][1:]:
        _, n = ndimage.label(lumen[:, :, z], structure=CROSS_2D)
        _, n_above = ndimage.label(lumen[:, :, z + 1], structure=CROSS_2D)
        if n >= 2 and n_above == 1:
            c = np.array(ndimage.center_of_mass(lumen[:, :, z + 1])) * np.asarray(spacing[:2])
            # the bifurcation lies somewhere between the last tracheal slice and the first split one
            return int(z), np.append(c, (z + 0.5) * spacing[2])
    return None


def _bronchus_track(
    lumen: np.ndarray, z_first: int, carina: np.ndarray, side: int, spacing: Spacing
) -> list[tuple[int, np.ndarray, float]]:
    """(slice, centroid mm, area mm2) of one main bronchus' tracked sections, down from the carina.

    ``side`` +1 is the right bronchus (x above the carina's), -1 the left; the track ends at the first
    slice without lumen on that side.
    """
    px = np.asarray(spacing[:2], dtype=np.float64)
    x_mm = (np.arange(lumen.shape[0]) * px[0])[:, None]
    track = []
    for z in range(z_first, -1, -1):
        sec = lumen[:, :, z] & (side * (x_mm - carina[0]) > 0)
        if not sec.any():
            break
        track.append((z, np.array(ndimage.center_of_mass(sec)) * px, float(sec.sum() * px[0] * px[1])))
    return track


def _section_on_axis(
    hu: np.ndarray, air: np.ndarray, centre: np.ndarray, radius: float, px: np.ndarray, contrast_hu: float
) -> np.ndarray | None:
    """The bronchus' lumen in one slice near ``centre`` (mm), or None where no darker tube is there."""
    xs = (np.arange(hu.shape[0]) * px[0])[:, None]
    ys = (np.arange(hu.shape[1]) * px[1])[None, :]
    near = np.hypot(xs - centre[0], ys - centre[1])
    win = near <= radius + WALL_MM + WINDOW_MARGIN_VOXELS * float(px.max())
    if not win.any():
        return None
    box = ndimage.find_objects(win.astype(np.int8))[0]
    h = hu[box].astype(np.float64)
    smooth = ndimage.gaussian_filter(h, SMOOTH_SIGMA_VOXELS)
    # the lumen's centre: the darkest point within half a radius (at least one voxel) of the prediction
    cand = near[box] <= max(0.5 * radius, float(px.max()))
    if not cand.any():
        return None
    k = np.unravel_index(np.argmin(np.where(cand, smooth, np.inf)), h.shape)
    c = np.array([(k[0] + box[0].start) * px[0], (k[1] + box[1].start) * px[1]])
    d = np.hypot(xs[box[0]] - c[0], ys[:, box[1]] - c[1])
    ring = (d > radius + WALL_MM) & (d <= radius + WALL_MM + RING_VOXELS * float(px.max()))
    core = float(smooth[k])
    ring_hu = float(np.median(h[ring])) if ring.any() else core
    if ring_hu - core < contrast_hu:
        return None
    inside = (d <= radius + 0.5 * float(px.max())) & (h < 0.5 * (core + ring_hu)) & air[box]
    lab, _ = ndimage.label(inside, structure=CROSS_2D)
    if lab[k] == 0:
        return None
    sec = np.zeros(hu.shape, dtype=bool)
    sec[box] = lab == lab[k]
    return sec
