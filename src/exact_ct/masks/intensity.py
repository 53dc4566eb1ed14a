"""Classical intensity backend: organ label map from HU thresholds and morphology, no learned weights.

Works on a coarse internal grid (``grid_mm``, block means) for speed and maps the labels back to the
input grid by nearest neighbour. Each organ's method and its limits are documented in docs/masks.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from exact_ct.io import spacing_from_affine
from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.derive import mediastinum_region, pleura, thoracic_cage
from exact_ct.masks.morph import (
    SLICE_STRUCTURE,
    Spacing,
    block_mean,
    dilate_mm,
    downsample_factors,
    erode_mm,
    fill_holes_2d,
    inplane_distance,
    largest_component,
    upsample_labels,
)
from exact_ct.schema import ORGAN_IDS

LUNG_L, LUNG_R, AIRWAY, PLEURA = (ORGAN_IDS[n] for n in ("lung_left", "lung_right", "airway", "pleura"))
HEART, AORTA, ESOPHAGUS, MEDIASTINUM, BODY = (
    ORGAN_IDS[n] for n in ("heart", "aorta", "esophagus", "mediastinum", "body")
)


def segment(hu: np.ndarray, affine: np.ndarray, cfg: IntensityConfig | None = None) -> np.ndarray:
    """Organ label map (uint8, ids of schema.ORGANS) of a RAS+ CT volume in HU, on the input grid."""
    cfg = cfg or IntensityConfig()
    if hu.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {hu.shape}")
    spacing_in = spacing_from_affine(affine)
    factors = downsample_factors(spacing_in, cfg.grid_mm)
    coarse = block_mean(np.asarray(hu), factors)
    spacing = tuple(s * f for s, f in zip(spacing_in, factors, strict=True))
    labels = segment_coarse(coarse, spacing, cfg)  # type: ignore[arg-type]
    return upsample_labels(labels, factors, hu.shape)


def segment_coarse(hu: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """All organs on the working grid; later organs never overwrite earlier, more certain ones."""
    body = _body(hu, spacing, cfg)
    air = body & (hu < cfg.lung_hu_max)
    bone = _bone(hu, body, spacing, cfg)
    airway, lung_air = _airway(air, body, spacing, cfg)
    lung_l, lung_r = _lungs(lung_air, hu, spacing, cfg)
    lungs = lung_l | lung_r
    if lungs.any():
        # The trachea is only airway where it lies between or above the lungs, not bowel gas below.
        airway &= np.arange(hu.shape[2])[None, None, :] >= np.flatnonzero(lungs.any(axis=(0, 1)))[0]
    region = mediastinum_region(lungs, body, bone) & ~airway
    # Bone at the level of the lungs is the cage (ribs, spine, sternum) that bounds the pleural space.
    cage = thoracic_cage(lungs, bone)
    heart = _heart(hu, region, spacing, cfg)
    aorta = _aorta(hu, region & ~heart, bone, spacing, cfg)
    esophagus = _esophagus(hu, region & ~heart & ~aorta, bone, airway, spacing, cfg)
    organs = airway | heart | aorta | esophagus
    pleural = pleura(
        lungs,
        cage,
        organs | bone | region,
        spacing,
        shell_mm=cfg.pleura_shell_mm,
        hu=hu,
        effusion_hu=cfg.effusion_hu,
        effusion_max_mm=cfg.effusion_max_mm,
    )
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[body] = BODY
    labels[region & ~pleural] = MEDIASTINUM
    labels[pleural] = PLEURA
    labels[esophagus] = ESOPHAGUS
    labels[aorta] = AORTA
    labels[heart] = HEART
    labels[lung_l] = LUNG_L
    labels[lung_r] = LUNG_R
    labels[airway] = AIRWAY
    return labels


def _body(hu: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """Everything that is not outside air, as its largest component after cutting off the scanner table.

    Outside air is air connected to the in-plane border whose median is darker than aerated lung; lungs
    of a tightly cropped scan also touch the border, but their median is well above -960 HU.
    """
    air = hu <= cfg.body_hu_min
    labels, n = ndimage.label(air)
    border = np.zeros(hu.shape, dtype=bool)
    border[[0, -1], :, :] = True
    border[:, [0, -1], :] = True
    touching = np.unique(labels[border & air])
    touching = touching[touching > 0]
    outside = np.zeros(hu.shape, dtype=bool)
    if touching.size:
        # median <= gas_median_hu_max, computed as a share of dark voxels (much faster than a median)
        dark = np.asarray(ndimage.mean(hu <= cfg.gas_median_hu_max, labels, touching))
        outside = np.isin(labels, touching[dark >= 0.5])
    inside = ~outside
    # The opening cuts the thin contact between patient and table so that the table is its own component.
    opened = dilate_mm(erode_mm(inside & ~air, 4.0, spacing), 4.0, spacing) | (inside & air)
    body = largest_component(opened & inside)
    return fill_holes_2d(body)


def _bone(hu: np.ndarray, body: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """Dense voxels, less large contrast-filled blood pools (their mean is above any bone's)."""
    dense = body & (hu >= cfg.bone_hu_min)
    labels, n = ndimage.label(dense)
    if n == 0:
        return dense
    index = np.arange(1, n + 1)
    ml = ndimage.sum_labels(dense, labels, index) * float(np.prod(spacing)) / 1000.0
    means = np.asarray(ndimage.mean(hu, labels, index))
    blood = index[(ml >= 20.0) & (means >= cfg.contrast_mean_hu_min)]
    return dense & ~np.isin(labels, blood)


def _airway(
    air: np.ndarray, body: np.ndarray, spacing: Spacing, cfg: IntensityConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Split internal air into airway (trachea + main bronchi) and the rest (lung candidates).

    The trachea and main bronchi are thinner than ``airway_radius_mm``, so an opening of all internal air
    removes them while the lungs survive; among the removed thin parts the airway is the component
    nearest the body's midline that reaches highest, and it must be tube-like (not a lung rim).
    """
    if not air.any():
        return np.zeros_like(air), air
    core = erode_mm(air, cfg.airway_radius_mm, spacing)
    opened = dilate_mm(core, cfg.airway_radius_mm, spacing) & air
    thin = air & ~opened
    labels, n = ndimage.label(thin)
    if n == 0:
        return np.zeros_like(air), air
    xs = np.flatnonzero(body.any(axis=(1, 2)))
    x_mid, width = 0.5 * (xs[0] + xs[-1]), max(xs[-1] - xs[0], 1)
    best, best_top = 0, -1
    index = np.arange(1, n + 1)
    centroids = ndimage.center_of_mass(thin, labels, index)
    sizes = ndimage.sum_labels(thin, labels, index)
    for lab, (cx, _cy, _cz), size in zip(index, centroids, sizes, strict=True):
        if abs(cx - x_mid) > 0.15 * width or size * np.prod(spacing) < 1000.0:  # < 1 ml: noise
            continue
        zs = np.flatnonzero((labels == lab).any(axis=(0, 1)))
        # A trachea spans several cm in z with a small cross-section.
        extent_mm = (zs[-1] - zs[0] + 1) * spacing[2]
        areas = (labels == lab).sum(axis=(0, 1))[zs] * spacing[0] * spacing[1]
        if extent_mm < 30.0 or np.median(areas) > cfg.airway_max_area_mm2:
            continue
        if zs[-1] > best_top:
            best, best_top = int(lab), int(zs[-1])
    if best == 0:
        return np.zeros_like(air), air
    airway = labels == best
    return airway, air & ~airway


def _lungs(
    lung_air: np.ndarray, hu: np.ndarray, spacing: Spacing, cfg: IntensityConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Left and right lung: aerated components that are not bowel gas, split at the narrowest junction."""
    labels, n = ndimage.label(lung_air)
    if n == 0:
        return np.zeros_like(lung_air), np.zeros_like(lung_air)
    index = np.arange(1, n + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = ndimage.sum_labels(lung_air, labels, index) * voxel_ml
    dark = np.asarray(ndimage.mean(hu <= cfg.gas_median_hu_max, labels, index))  # median test
    keep = index[(sizes >= cfg.min_lung_ml) & (dark < 0.5)]
    lungs = np.isin(labels, keep)
    # Vessels inside the lung are lung too: fill in-slice holes of the aerated mask.
    lungs = fill_holes_2d(lungs)
    if not lungs.any():
        return lungs, lungs.copy()
    xs = np.flatnonzero(lungs.any(axis=(1, 2)))
    x_mid = 0.5 * (xs[0] + xs[-1])
    span = xs[-1] - xs[0]
    x = np.arange(lungs.shape[0])[:, None, None]
    # Seeds far from the midline; the watershed on the distance map follows the narrowest junction, so
    # lungs that touch at the anterior junction line are split there and not at an arbitrary plane.
    markers = np.zeros(lungs.shape, dtype=np.int32)
    markers[lungs & (x < x_mid - 0.2 * span)] = LUNG_L  # RAS+: patient's left has the smaller x
    markers[lungs & (x > x_mid + 0.2 * span)] = LUNG_R
    dist = ndimage.distance_transform_edt(lungs, sampling=spacing)
    split = watershed(-dist, markers, mask=lungs)
    # Components without a seed (small, central) go to the side of their centroid.
    rest = lungs & (split == 0)
    split[rest & (x < x_mid)] = LUNG_L
    split[rest & (x >= x_mid)] = LUNG_R
    return split == LUNG_L, split == LUNG_R


def _heart(hu: np.ndarray, region: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """Largest thick soft-tissue mass between the lungs (fat, air and bone excluded).

    An erosion of ``heart_core_mm`` leaves only structures thicker than the great vessels; the largest
    such core is the heart, which is then grown back within soft tissue.
    """
    tissue = region & (hu > cfg.fat_hu_max) & (hu < cfg.bone_hu_min * 3)
    core = erode_mm(tissue, cfg.heart_core_mm, spacing)
    if not core.any():
        return np.zeros_like(region)
    core = largest_component(core)
    if core.sum() * np.prod(spacing) / 1000.0 < 1.0:
        return np.zeros_like(region)
    heart = dilate_mm(core, cfg.heart_core_mm, spacing) & tissue
    heart = largest_component(heart)
    if heart.sum() * np.prod(spacing) / 1000.0 < cfg.heart_min_ml:
        return np.zeros_like(region)
    return fill_holes_2d(heart)


def _aorta(
    hu: np.ndarray, region: np.ndarray, bone: np.ndarray, spacing: Spacing, cfg: IntensityConfig
) -> np.ndarray:
    """Round cross-sections of aortic calibre, linked in z; the longest tube is the aorta.

    In each axial slice the (descending) aorta is a near-circular soft-tissue or contrast disc of 8-20 mm
    radius surrounded by fat or lung. A slice component is round when its area is at least 60% of the
    disc given by its largest in-plane distance to the outside. Round components are linked across
    slices; the tube with the longest z extent is kept, together with any other round tube at least
    60 mm long (the ascending aorta where fat separates it from the pulmonary trunk).
    """
    tissue = region & (hu > cfg.fat_hu_max) & ~bone
    if not tissue.any():
        return np.zeros_like(region)
    r_min, r_max = cfg.aorta_radius_mm
    d = inplane_distance(tissue, spacing)
    labels, n = ndimage.label(tissue, structure=SLICE_STRUCTURE)
    index = np.arange(1, n + 1)
    area = ndimage.sum_labels(tissue, labels, index) * spacing[0] * spacing[1]
    radius = np.asarray(ndimage.maximum(d, labels, index))
    round_ = (radius >= r_min) & (radius <= r_max) & (area >= 0.6 * np.pi * radius**2)
    tubes, m = ndimage.label(np.isin(labels, index[round_]))
    if m == 0:
        return np.zeros_like(region)
    extents = np.array([(sl[2].stop - sl[2].start) * spacing[2] for sl in ndimage.find_objects(tubes)])
    if extents.max() < 30.0:
        return np.zeros_like(region)
    keep = np.flatnonzero((extents == extents.max()) | (extents >= 60.0)) + 1
    return np.isin(tubes, keep)


def _esophagus(
    hu: np.ndarray,
    region: np.ndarray,
    bone: np.ndarray,
    airway: np.ndarray,
    spacing: Spacing,
    cfg: IntensityConfig,
) -> np.ndarray:
    """Tube just in front of the spine near the midline: a disc of ``esophagus_radius_mm`` per slice.

    Its centre in each slice is the non-fat voxel (soft tissue or luminal air) of the mediastinal region
    closest to a point ``radius + 4 mm`` in front of the vertebral body; this is a shape prior, not a
    segmentation of its wall.
    """
    out = np.zeros_like(region)
    cand = region & ((hu > cfg.fat_hu_max) | (hu < cfg.lung_hu_max)) & ~airway
    if not cand.any() or not bone.any():
        return out
    spine = largest_component(bone)
    r = cfg.esophagus_radius_mm
    gx = np.arange(region.shape[0])[:, None] * spacing[0]
    gy = np.arange(region.shape[1])[None, :] * spacing[1]
    for z in np.flatnonzero(cand.any(axis=(0, 1)) & spine.any(axis=(0, 1))):
        sx, sy = np.nonzero(spine[:, :, z])
        x_mid = np.median(sx) * spacing[0]
        # Anterior edge of the vertebral body (RAS+: +y is anterior): bone near the midline within
        # 60 mm of the most posterior bone, so that the sternum is never taken for the spine.
        near = np.abs(sx * spacing[0] - x_mid) < 15.0
        ys = sy[near] * spacing[1] if near.any() else sy * spacing[1]
        front = ys[ys < ys.min() + 60.0].max()
        cx, cy = np.nonzero(cand[:, :, z])
        d2 = (cx * spacing[0] - x_mid) ** 2 + (cy * spacing[1] - front - r - 4.0) ** 2
        i = int(np.argmin(d2))
        if d2[i] > (3 * r) ** 2:
            continue
        disc = (gx - cx[i] * spacing[0]) ** 2 + (gy - cy[i] * spacing[1]) ** 2 <= r * r
        out[:, :, z] = disc & cand[:, :, z]
    return out


def _dilate_inplane(mask: np.ndarray, radius_mm: float, spacing: Spacing) -> np.ndarray:
    if not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask, sampling=(spacing[0], spacing[1], 1e6)) <= radius_mm
