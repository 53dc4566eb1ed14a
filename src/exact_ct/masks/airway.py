"""Airway wall at sub-voxel precision: each section of the tracked lumen fitted by an ellipse and grown by the wall."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.morph import Spacing

#: Adult trachea and main bronchi: wall about 1-3 mm thick, typically 1.5 mm.
WALL_MM = 1.5
#: Partial-volume end points: a voxel at AIR_HU is all lumen, one at TISSUE_HU (airway wall) none.
AIR_HU, TISSUE_HU = -1000.0, 0.0
#: A section is an ellipse when at least this share of its lumen voxels lies inside the fitted ellipse.
_ELLIPSE_FIT_MIN = 0.9
_CROSS_2D = ndimage.generate_binary_structure(2, 1)


def airway_with_wall(
    lumen: np.ndarray,
    hu: np.ndarray,
    air: np.ndarray,
    spacing: Spacing,
    wall_mm: float = WALL_MM,
) -> np.ndarray:
    """Trachea and main bronchi including their wall: voxels whose centre lies inside the outer wall.

    A voxel of the airway's wall is mostly soft tissue, so HU alone cannot tell it from the mediastinal
    fat or vessel beside it, and the thin wall is never resolved at a 3 mm grid: the airway is instead
    drawn geometrically from the lumen, which is. Each in-slice section of the tracked lumen (trachea,
    or one main bronchus) is a tube's cut: an ellipse, a circle for the upright trachea, elongated by
    1/cos(tilt) for an oblique bronchus. Its area is the sum of the air fraction of the voxels in and
    around it (partial volume between ``AIR_HU`` and ``TISSUE_HU``: a blurred or block-averaged edge
    keeps the sum, so the area is exact to well under a voxel), its centre the fraction-weighted
    centroid and its shape (axis ratio, orientation) the weighted second moments. The outer wall of an
    oblique tube of radius ``b`` (the ellipse's minor semi-axis) is the lumen ellipse scaled by
    ``(b + wall_mm) / b``; voxels whose centre lies inside it are airway. A section that is not an
    ellipse (the carina, where trachea and bronchi merge) is grown by ``wall_mm`` plus half a voxel.

    Args:
        lumen: tracked airway lumen (air voxels), bool (x, y, z).
        hu: the CT volume in HU on the same grid.
        air: every air voxel (lumen, lung): only the lumen's own air counts towards its area.
        spacing: voxel size (mm).
        wall_mm: airway wall thickness.

    Returns:
        The airway (lumen and wall), a superset of ``lumen``.
    """
    out = lumen.copy()
    px = (float(spacing[0]), float(spacing[1]))
    reach = int(np.ceil(2.0 * wall_mm / min(px))) + 2
    for z in np.flatnonzero(lumen.any(axis=(0, 1))):
        lab, n = ndimage.label(lumen[:, :, z], structure=_CROSS_2D)
        for k, box in enumerate(ndimage.find_objects(lab), start=1):
            # a window around the section, wide enough for the scaled ellipse of an oblique bronchus
            w = tuple(
                slice(max(b.start - reach, 0), min(b.stop + reach, s))
                for b, s in zip(box, lab.shape, strict=True)
            )
            sec = lab[w] == k
            grown = _section_with_wall(
                sec, np.asarray(hu[w + (z,)], dtype=np.float64), air[w + (z,)], px, wall_mm
            )
            out[w + (z,)] |= grown
    return out


def _section_with_wall(
    sec: np.ndarray, hu: np.ndarray, air: np.ndarray, px: tuple[float, float], wall_mm: float
) -> np.ndarray:
    """One lumen section (2-D window) grown to its outer wall, by an ellipse fit or a distance fallback."""
    frac = np.clip((TISSUE_HU - hu) / (TISSUE_HU - AIR_HU), 0.0, 1.0)
    # the section and its one-voxel rim, where its partial volume lies; other air (lung) is not lumen
    rim = ndimage.binary_dilation(sec, structure=_CROSS_2D) & (sec | ~air)
    weight = np.where(rim, frac, 0.0)
    total = float(weight.sum())
    if total <= 0.0:
        return sec
    xs = (np.arange(sec.shape[0]) * px[0])[:, None]
    ys = (np.arange(sec.shape[1]) * px[1])[None, :]
    cx, cy = float((weight * xs).sum()) / total, float((weight * ys).sum()) / total
    dx, dy = xs - cx, ys - cy
    cov = (
        np.array(
            [
                [(weight * dx * dx).sum(), (weight * dx * dy).sum()],
                [(weight * dx * dy).sum(), (weight * dy * dy).sum()],
            ]
        )
        / total
    )
    evals, evecs = np.linalg.eigh(cov)
    area = total * px[0] * px[1]
    ratio = float(np.sqrt(max(evals[1], 1e-6) / max(evals[0], 1e-6)))
    minor = float(np.sqrt(area / (np.pi * ratio)))
    # coordinates along the major (u) and minor (v) axis, in units of the semi-axes
    u = (dx * evecs[0, 1] + dy * evecs[1, 1]) / (ratio * minor)
    v = (dx * evecs[0, 0] + dy * evecs[1, 0]) / minor
    rho = np.sqrt(u * u + v * v)
    # a lumen voxel beyond the ellipse (by more than half a voxel) means the section is not an ellipse
    half_vox = 0.5 * min(px) / minor
    if float((rho[sec] <= 1.0 + half_vox).mean()) >= _ELLIPSE_FIT_MIN:
        return sec | (rho <= (minor + wall_mm) / minor)
    dist = ndimage.distance_transform_edt(~sec, sampling=px)
    return sec | (dist <= wall_mm + 0.5 * min(px))


#: Adult main bronchi, carina to the first lobar branch: right about 25 mm, left about 50 mm (the left
#: passes under the aortic arch). Lengths of the anatomy, not of any scan.
RIGHT_MAIN_BRONCHUS_MM, LEFT_MAIN_BRONCHUS_MM = 25.0, 50.0
#: A section on the bronchus' axis is lumen when its core is this much darker than the ring around it.
_CONTINUE_CONTRAST_HU = 60.0
#: Sections of the tracked bronchus that fix its axis.
_AXIS_SECTIONS = 3


def extend_main_bronchi(
    lumen: np.ndarray,
    hu: np.ndarray,
    air: np.ndarray,
    spacing: Spacing,
    lengths_mm: tuple[float, float] = (RIGHT_MAIN_BRONCHUS_MM, LEFT_MAIN_BRONCHUS_MM),
    contrast_hu: float = _CONTINUE_CONTRAST_HU,
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
        _, n = ndimage.label(lumen[:, :, z], structure=_CROSS_2D)
        _, n_above = ndimage.label(lumen[:, :, z + 1], structure=_CROSS_2D)
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
    win = near <= radius + WALL_MM + 2.5 * float(px.max())
    if not win.any():
        return None
    box = ndimage.find_objects(win.astype(np.int8))[0]
    h = hu[box].astype(np.float64)
    smooth = ndimage.gaussian_filter(h, 0.7)
    # the lumen's centre: the darkest point within half a radius (at least one voxel) of the prediction
    cand = near[box] <= max(0.5 * radius, float(px.max()))
    if not cand.any():
        return None
    k = np.unravel_index(np.argmin(np.where(cand, smooth, np.inf)), h.shape)
    c = np.array([(k[0] + box[0].start) * px[0], (k[1] + box[1].start) * px[1]])
    d = np.hypot(xs[box[0]] - c[0], ys[:, box[1]] - c[1])
    ring = (d > radius + WALL_MM) & (d <= radius + WALL_MM + 1.5 * float(px.max()))
    core = float(smooth[k])
    ring_hu = float(np.median(h[ring])) if ring.any() else core
    if ring_hu - core < contrast_hu:
        return None
    inside = (d <= radius + 0.5 * float(px.max())) & (h < 0.5 * (core + ring_hu)) & air[box]
    lab, _ = ndimage.label(inside, structure=_CROSS_2D)
    if lab[k] == 0:
        return None
    sec = np.zeros(hu.shape, dtype=bool)
    sec[box] = lab == lab[k]
    return sec
