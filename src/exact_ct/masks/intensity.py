"""Classical intensity backend: organ label map from HU thresholds and morphology, no learned weights.

Works on a coarse internal grid (``grid_mm``, block means) for speed and maps the labels back to the
input grid by nearest neighbour. Each organ's method and its limits are documented in docs/masks.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from exact_ct.io import spacing_from_affine
from exact_ct.masks.airway import airway_with_wall, extend_main_bronchi
from exact_ct.masks.aorta_plain import aorta_plain
from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.esophagus import esophagus as fit_esophagus
from exact_ct.masks.esophagus import nearest_seed
from exact_ct.masks.morph import (
    Spacing,
    between,
    between_lungs,
    block_mean,
    components_touching,
    depth_mm,
    dilate_mm,
    downsample_factors,
    erode_mm,
    fill_holes_2d,
    fill_small_holes_2d,
    label_sums,
    largest_component,
    nearer_to_first,
    upsample_labels,
)
from exact_ct.masks.vessels import (
    CONTRAST_BLOOD_HU,
    aorta_enhanced,
    aorta_unenhanced,
    ascending_from_above,
    blood_pool_hu,
    heart_below_floor,
    ventricle_wall,
)
from exact_ct.schema import ORGAN_IDS

LUNG_L, LUNG_R, AIRWAY, PLEURA = (ORGAN_IDS[n] for n in ("lung_left", "lung_right", "airway", "pleura"))
HEART, AORTA, ESOPHAGUS, MEDIASTINUM, BODY = (
    ORGAN_IDS[n] for n in ("heart", "aorta", "esophagus", "mediastinum", "body")
)
_CROSS_2D = ndimage.generate_binary_structure(2, 1)
_CROSS_3D = ndimage.generate_binary_structure(3, 1)
#: Spinous process tip to vertebral body front of an adult thoracic vertebra is at most about this.
_VERTEBRA_DEPTH_MM = 90.0
#: A long bone component is the vertebral column only if it holds at least this share of the largest one's voxels.
SPINE_MIN_SHARE = 0.25


def segment(hu: np.ndarray, affine: np.ndarray, cfg: IntensityConfig | None = None) -> np.ndarray:
    """Organ label map (uint8, ids of schema.ORGANS) of a RAS+ CT volume in HU, on the input grid."""
    cfg = cfg or IntensityConfig()
    if hu.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {hu.shape}")
    spacing_in = spacing_from_affine(affine)
    factors = downsample_factors(spacing_in, cfg.grid_mm)
    coarse = block_mean(np.asarray(hu), factors)
    spacing = tuple(float(s * f) for s, f in zip(spacing_in, factors, strict=True))
    labels = segment_coarse(coarse, spacing, cfg)  # type: ignore[arg-type]
    out = np.zeros(hu.shape, dtype=np.uint8)
    if not labels.any():
        return out
    # Only the body's bounding box is repeated onto the input grid; the rest stays outside (0).
    box = _bbox(labels > 0, pad=0)
    full = tuple(
        slice(b.start * f, min(b.stop * f, n)) for b, f, n in zip(box, factors, hu.shape, strict=True)
    )
    out[full] = upsample_labels(labels[box], factors, tuple(s.stop - s.start for s in full))
    return out


def segment_coarse(hu: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """All organs on the working grid; later organs never overwrite earlier, more certain ones."""
    body_full = _body(hu, spacing, cfg)
    labels_full = np.zeros(hu.shape, dtype=np.uint8)
    if not body_full.any():
        return labels_full
    # Everything else works inside the body's bounding box: a chest fills only part of the field of view.
    crop = _bbox(body_full, pad=1)
    labels_full[crop] = _organs(hu[crop], body_full[crop], spacing, cfg)
    return labels_full


def _organs(hu: np.ndarray, body: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """Every organ inside the body (cropped to its bounding box)."""
    air = body & (hu < cfg.lung_hu_max)
    lumen, _ = _airway(air, hu, body, spacing, cfg)
    # the main bronchi followed on along their axis into the hilum, where the tracker loses them
    lumen = extend_main_bronchi(lumen, hu, air, spacing)
    # the wall drawn at sub-voxel precision around the tracked lumen (see exact_ct.masks.airway)
    airway = airway_with_wall(lumen, hu, air, spacing, cfg.airway_wall_mm)
    lung_air = air & ~airway
    lung_l, lung_r = _lungs(lung_air, hu, spacing, cfg)
    lungs = lung_l | lung_r
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[body] = BODY
    if not lungs.any():
        labels[airway] = AIRWAY
        return labels
    # The trachea is only airway where it lies between or above the lungs, not bowel gas below.
    airway &= np.arange(hu.shape[2])[None, None, :] >= np.flatnonzero(lungs.any(axis=(0, 1)))[0]
    bone = _bone(hu, body, between(lung_l, lung_r, axis=0), spacing, cfg)
    # The spinal canal and a vertebral body's spongy interior (below the bone threshold at a coarse
    # grid) belong to the spine: in-slice holes up to a vertebral body's section are filled, never the
    # chest, which ribs and sternum may close into a ring.
    hole_px = cfg.bone_hole_max_mm2 / (spacing[0] * spacing[1])
    bone_filled = fill_small_holes_2d(bone, hole_px)
    dense = fill_small_holes_2d(body & (hu >= cfg.bone_hu_min), hole_px)
    spine_bone = _spine(bone, lung_l, lung_r)
    spine = _front_of_spine(spine_bone, dense, spacing)
    # The space's paravertebral limit uses the bone component's own front (it never reaches into a
    # blood pool): cutting a little less there costs nothing, the walk's error would cut the heart.
    # the vertebral column with its canal and spongy bone filled (also kept out of the aorta's search)
    column = fill_small_holes_2d(spine_bone, hole_px)
    arch = _front_of_spine(spine_bone, column, spacing)
    region = mediastinal_space(lung_l, lung_r, body, arch, spacing) & ~bone_filled & ~airway
    heart, aorta, esophagus = (np.zeros_like(region) for _ in range(3))
    blood_hu: float | None = None
    if region.any():
        # Heart, aorta and esophagus are searched only in the box around the mediastinal space: the
        # distance transforms there cost a fraction of whole-volume ones.
        box = _bbox(region, pad=2)
        hu_b, region_b, lungs_b, airway_b = hu[box], region[box], lungs[box], airway[box]
        spine_b = spine.crop(box)
        # Soft tissue and blood (with or without contrast); mediastinal fat and air are not.
        tissue = region_b & (hu_b > cfg.fat_hu_max)
        heart[box] = heart_b = _heart(tissue, lungs_b, spacing, cfg)
        blood_hu = blood_pool_hu(hu_b, heart_b)
        if blood_hu is not None and blood_hu >= CONTRAST_BLOOD_HU:
            # Contrast CT: the lumen is brighter than any soft tissue, so the aorta is tracked through
            # the whole body (descending limb beside the spine and into the abdomen, arch, ascending
            # limb); what of it the heart's regrowth took (aortic root, ascending aorta) is given back.
            # The vertebral column's spongy bone has the density of contrast blood at this grid.
            allowed = body & ~lungs & ~airway & ~column
            aorta = aorta_enhanced(hu, allowed, heart, bone_filled, blood_hu, arch, spacing, cfg)
            if not aorta.any():
                # No descending aorta (the spine is outside a crop): the ascending aorta is still the
                # lumen tube that rises from the heart's top to the arch.
                aorta = ascending_from_above(hu, allowed, heart, blood_hu, spacing, cfg)
            heart &= ~aorta
            # The mediastinal floor (lung on both sides) cuts a heart that sits low on the diaphragm:
            # its enhanced chambers are followed down under that cut.
            soft = body & ~lungs & ~airway & ~bone_filled & ~aorta & (hu > cfg.fat_hu_max)
            # The opening that regrew the heart cut the apex and the ventricles' wall against the lung.
            heart |= ventricle_wall(heart, region & soft, lungs, aorta, spacing)
            heart = fill_holes_2d(heart | heart_below_floor(hu, heart, soft, blood_hu, spacing)) & ~aorta
            heart_b = heart[box]
            # The esophagus is fitted outside the aorta's section, thrombus included (its soft tissue
            # bounds the fit: taking it back cost aorta_report's thrombosed aorta 0.005 Dice).
            if cfg.esophagus_split_aorta:
                # The aorta's soft-tissue section (grown round the lumen for a thrombus) also takes the
                # esophagus where the two touch: the esophagus is fitted with that tissue allowed and the
                # overlap is split by the nearer section (relative to its size).
                aorta_b = aorta[box]
                eso_b = fit_esophagus(
                    hu_b, region_b & ~heart_b, spine_b, airway_b, spacing, cfg, aorta=aorta_b
                )
                eso_b &= ~(aorta_b & ~nearer_to_first(eso_b, aorta_b, spacing))
                esophagus[box] = eso_b
                aorta[box] = aorta_b & ~eso_b
            else:
                esophagus[box] = fit_esophagus(
                    hu_b, region_b & ~heart_b & ~aorta[box], spine_b, airway_b, spacing, cfg
                )
        else:
            # Unenhanced blood has the density of the heart, the esophagus and the paravertebral
            # muscle: the aorta is a tracked round section in front of the vertebral bodies, re-centred
            # on its fat boundary (exact_ct.masks.aorta_plain). The esophagus's fixed-size disc goes
            # first, so that the track does not run into it; the fitted esophagus (wider where the tube
            # is) splits the overlap with the aorta and then yields to it.
            eso_b = _esophagus(hu_b, region_b & ~heart_b, spine_b, airway_b, spacing, cfg)
            eso_fit = fit_esophagus(hu_b, region_b & ~heart_b, spine_b, airway_b, spacing, cfg)
            aorta[box] = aorta_plain(hu_b, region_b, tissue, heart_b, eso_b, spine_b, spacing, cfg, eso_fit)
            esophagus[box] = eso_fit & ~aorta[box]
            heart &= ~aorta  # the aortic root, continued inside the heart's outline
    # Above the mediastinal space (the neck) the esophagus lies directly behind the trachea.
    esophagus |= _esophagus_neck(hu, esophagus, airway, body & ~bone_filled, spacing, cfg)
    if not aorta.any() and (blood_hu is None or blood_hu < CONTRAST_BLOOD_HU):
        # No aorta in the mediastinal space (a scan of the lung bases and upper abdomen): the
        # descending and abdominal aorta as a soft-tissue tube in front of the spine, anywhere.
        allowed = body & ~lungs & ~airway & ~column & ~heart
        aorta = aorta_unenhanced(hu, allowed, bone_filled, spine, spacing, cfg)
    organs = airway | heart | aorta | esophagus
    # The mediastinum ends at the front of the vertebral bodies: beside and behind them lie the
    # paravertebral gutters (body wall lined by pleura). The organs were searched in the wider space
    # because the descending aorta sits beside the vertebral body.
    # (and the prevertebral soft tissue, ligament and fascia, in front of them is not mediastinum either)
    region &= ~spine.behind(hu.shape[1], extra=cfg.prevertebral_mm / spacing[1])
    # (the abdominal aorta of a contrast CT must not pull the mediastinum's floor down into the abdomen)
    region &= _above_floor(lungs, heart | (aorta & region) | esophagus, spacing)
    # Soft tissue in that space that runs on under its floor is the diaphragm, the liver dome or the
    # inferior vena cava's entry, not mediastinum (whose own contents above the floor are fat and organs).
    dome = _under_floor_tissue(region, body & (hu > cfg.fat_hu_max) & ~organs & ~bone_filled & ~lungs)
    region &= ~dome
    pleural = _pleura(hu, lungs, body & ~region & ~organs & ~bone_filled & ~dome, bone, spacing, cfg)
    labels[region & ~pleural] = MEDIASTINUM
    labels[pleural] = PLEURA
    labels[aorta] = AORTA
    labels[esophagus] = ESOPHAGUS
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
        lut[touching[dark >= 0.5]] = True
        outside = lut[labels]
    inside = ~outside
    # The opening cuts the thin contact between patient and table so that the table is its own component.
    opened = dilate_mm(erode_mm(inside & ~air, 4.0, spacing), 4.0, spacing) | (inside & air)
    body = largest_component(opened & inside)
    return fill_holes_2d(body)


def _bone(
    hu: np.ndarray, body: np.ndarray, inner: np.ndarray, spacing: Spacing, cfg: IntensityConfig
) -> np.ndarray:
    """Dense voxels, less contrast-filled blood pools and calcifications.

    A dense component is blood (or calcified plaque) rather than bone when its mean is above any bone's
    at the working grid, or when it lies wholly inside ``inner`` (between the lungs): spine, sternum and
    ribs always reach beyond that space.
    """
    dense = body & (hu >= cfg.bone_hu_min)
    # At the working grid a contrast-filled aorta may touch a vertebra in a voxel or two: classify the
    # components of the eroded dense mask (ribs vanish in it and stay bone), then grow blood back.
    core = ndimage.binary_erosion(dense, iterations=2)
    labels, n = ndimage.label(core)
    if n == 0:
        return dense
    index = np.arange(1, n + 1)
    count = label_sums(labels, n)[1:]
    ml = count * float(np.prod(spacing)) / 1000.0
    means = label_sums(labels, n, hu)[1:] / np.maximum(count, 1)
    share_inner = label_sums(labels, n, inner)[1:] / np.maximum(count, 1)
    # The vertebral body also lies between the lungs, but most of its core lies within two voxels of its
    # cortex, denser than any blood pool; a blood pool only touches bone at a small part of its core.
    near_cortex = ndimage.maximum_filter((hu >= cfg.cortex_hu_min).view(np.uint8), size=5)
    cortex_share = label_sums(labels, n, near_cortex)[1:] / np.maximum(count, 1)
    is_blood = np.zeros(n + 1, dtype=bool)
    inside = (share_inner >= 0.9) & (cortex_share < 0.25)
    is_blood[index[((ml >= 5.0) & (means >= cfg.contrast_mean_hu_min)) | inside]] = True
    blood = ndimage.binary_dilation(is_blood[labels], iterations=3) & dense
    # Small dense specks between the lungs (noisy contrast blood just above the threshold, calcified
    # plaque) have no core at all: they are not bone either.
    # A blood pool whose median lies near the threshold is a speckled network of dense voxels with only
    # a small core: what the grow-back of that core did not reach is likewise blood when it lies between
    # the lungs away from any cortex (a vertebral body there has its cortex all round).
    specks, m = ndimage.label(dense & ~blood)
    if m:
        sidx = np.arange(1, m + 1)
        scount = label_sums(specks, m)[1:]
        sinner = label_sums(specks, m, inner)[1:] / np.maximum(scount, 1)
        scortex = label_sums(specks, m, near_cortex)[1:] / np.maximum(scount, 1)
        small = np.zeros(m + 1, dtype=bool)
        small_ml = scount * float(np.prod(spacing)) / 1000.0 < 2.0
        small[sidx[(small_ml | (scortex < 0.25)) & (sinner >= 0.9)]] = True
        blood |= small[specks]
    return dense & ~blood


def _airway(
    air: np.ndarray, hu: np.ndarray, body: np.ndarray, spacing: Spacing, cfg: IntensityConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Trachea and main bronchi, tracked down from the top of the scan; returns (airway, other air).

    In the highest slices the trachea is a small, round air section near the body's midline. It is
    followed slice by slice downwards: every air section overlapping the airway of the slice above is
    airway while it stays small (trachea, then the two main bronchi after the carina); a section much
    larger than the trachea is lung, where a main bronchus ends (only its overlap is kept). Returns
    the lumen; its wall is drawn by :func:`exact_ct.masks.airway.airway_with_wall`. Only the coarse
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
    for z in range(top, max(top - int(80.0 / spacing[2]), -1), -1):
        lab, n = ndimage.label(air[:, :, z], structure=_CROSS_2D)
        if n == 0:
            continue
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(np.ones_like(lab), lab, idx) * px_mm2
        cx = np.array([c[0] for c in ndimage.center_of_mass(lab > 0, lab, idx)])
        ok = (area >= lo_a) & (area <= hi_a) & (np.abs(cx - x_mid) < 0.12 * width)
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
            lab, n = ndimage.label(air[:, :, z], structure=_CROSS_2D)
            grown = ndimage.binary_dilation(prev, structure=_CROSS_2D)
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
                clab, cn = ndimage.label(core, structure=_CROSS_2D)
                if cn:
                    carea = np.bincount(clab.ravel(), minlength=cn + 1)[1:] * px_mm2
                    keep = np.flatnonzero((carea >= lo_a) & (carea <= limit)) + 1
                    if keep.size:
                        nxt |= ndimage.binary_dilation(np.isin(clab, keep), structure=_CROSS_2D) & comp
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
    for zz in range(z - 1, max(z - 1 - int(round(20.0 / spacing[2])), -1), -1):
        lab, _ = ndimage.label(air[:, :, zz], structure=_CROSS_2D)
        hit = np.unique(lab[ndimage.binary_dilation(prev, structure=_CROSS_2D)])
        hit = hit[hit > 0]
        if hit.size == 0:
            return True  # the tube ends (or is cut): nothing widened
        nxt = np.isin(lab, hit)
        if nxt.sum() * px_mm2 > ratio * area_mm2:
            return False
        prev = nxt
    return True


def _lungs(
    lung_air: np.ndarray, hu: np.ndarray, spacing: Spacing, cfg: IntensityConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Left and right lung: aerated components that are not bowel gas, split at the narrowest junction."""
    labels, n = ndimage.label(lung_air)
    if n == 0:
        return np.zeros_like(lung_air), np.zeros_like(lung_air)
    index = np.arange(1, n + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    count = label_sums(labels, n)[1:]
    sizes = count * voxel_ml
    dark = label_sums(labels, n, hu <= cfg.gas_median_hu_max)[1:] / np.maximum(count, 1)  # median test
    keep = np.zeros(n + 1, dtype=bool)
    keep[index[(sizes >= cfg.min_lung_ml) & (dark < 0.5)]] = True
    lungs = keep[labels]
    # Vessels inside the lung are lung too: fill small in-slice holes (never the mediastinum between them).
    lungs = fill_small_holes_2d(lungs, cfg.lung_hole_max_mm2 / (spacing[0] * spacing[1]))
    if not lungs.any():
        return lungs, lungs.copy()
    xs = np.flatnonzero(lungs.any(axis=(1, 2)))
    x_mid = 0.5 * (xs[0] + xs[-1])
    span = xs[-1] - xs[0]
    x = np.arange(lungs.shape[0])[:, None, None]
    comp, m = ndimage.label(lungs)
    left = np.zeros_like(lungs)
    right = np.zeros_like(lungs)
    for k, sl in enumerate(ndimage.find_objects(comp), start=1):
        piece = comp[sl] == k
        lo, hi = sl[0].start, sl[0].stop - 1
        if lo < x_mid - 0.2 * span and hi > x_mid + 0.2 * span:
            # Both lungs in one component (they touch at the anterior junction line): seeds far from the
            # midline, and a watershed on the distance map splits at the narrowest neck.
            xx = x[sl[0]]
            markers = np.zeros(piece.shape, dtype=np.int32)
            markers[piece & (xx < x_mid - 0.2 * span)] = 1  # RAS+: patient's left has the smaller x
            markers[piece & (xx > x_mid + 0.2 * span)] = 2
            dist = ndimage.distance_transform_edt(piece, sampling=spacing)
            split = watershed(-dist, markers, mask=piece)
            left[sl] |= split == 1
            right[sl] |= split == 2
        else:
            centre = 0.5 * (lo + hi)
            (left if centre < x_mid else right)[sl] |= piece
    return left, right


def mediastinal_space(
    lung_l: np.ndarray, lung_r: np.ndarray, body: np.ndarray, spine: SpineLine, spacing: Spacing
) -> np.ndarray:
    """The space between the lungs, above the diaphragm: where heart, great vessels and esophagus lie.

    Per axial row, what lies right of the left lung and left of the right lung (a 3-D op). Behind the
    front of the vertebral body only the part within ``25 mm`` of the spine's midline counts: lateral to
    it are the paravertebral gutters, lung and pleural space (where dependent effusions lie). Below the
    lungs' medial bases that space would take the liver dome; the diaphragm is estimated per (x, y)
    column as the lowest lung voxel, smoothly interpolated under the heart where no lung lies.
    """
    lungs = lung_l | lung_r
    space = between(lung_l, lung_r, axis=0) & body & ~lungs
    floor = _diaphragm(lungs, spacing)
    z = np.arange(lungs.shape[2], dtype=np.float32)[None, None, :]
    space &= z >= floor[:, :, None]
    has, x_c, y_f = spine.has, spine.x_c, spine.y_f
    if has.any():
        x = np.arange(lungs.shape[0])[:, None, None] * spacing[0]
        y = np.arange(lungs.shape[1])[None, :, None] * spacing[1]
        xc = np.where(has, x_c, np.nanmedian(x_c))[None, None, :] * spacing[0]
        yf = np.where(has, y_f, np.nanmedian(y_f))[None, None, :] * spacing[1]
        space &= ~((y < yf) & (np.abs(x - xc) > 25.0))
    return space


def _diaphragm(lungs: np.ndarray, spacing: Spacing, reach_mm: float = 60.0) -> np.ndarray:
    """Per (x, y) column, the z index of the diaphragm under the space between the lungs.

    The lowest lung voxel of a column is the diaphragm only where lung reaches down to it; over the heart
    the upper lobes overhang and the column's lowest lung lies above the heart. Along each row (same
    antero-posterior level) the lowest lung within ``reach_mm`` left or right (the lung lateral to the
    heart goes down to the dome) is the floor; taking the row minimum keeps the whole heart above it.
    """
    has = lungs.any(axis=2)
    nz = lungs.shape[2]
    lowest = np.where(has, np.argmax(lungs, axis=2), nz).astype(np.float32)
    k = max(1, int(round(reach_mm / spacing[0])))
    return ndimage.minimum_filter1d(lowest, size=2 * k + 1, axis=0, mode="nearest")


def _above_floor(lungs: np.ndarray, organs: np.ndarray, spacing: Spacing, fat_mm: float = 15.0) -> np.ndarray:
    """Voxels above the diaphragm, with the mediastinal organs known (a (nx, ny, nz) mask).

    The floor of :func:`_diaphragm` must reach under the heart, so under the domes it lies too low and
    takes the liver dome and the stomach. Where a column holds lung and no mediastinal organ within
    ``fat_mm`` (the pericardial fat around the heart), the diaphragm is right under the column's lowest
    lung voxel; columns with an organ reach down to that organ's lowest voxel; columns without lung keep
    the interpolated floor.
    """
    nz = lungs.shape[2]
    z = np.arange(nz, dtype=np.float32)
    has_lung = lungs.any(axis=2)
    lowest_lung = np.where(has_lung, np.argmax(lungs, axis=2), nz).astype(np.float32)
    has_organ = organs.any(axis=2)
    lowest_organ = np.where(has_organ, np.argmax(organs, axis=2), nz).astype(np.float32)
    r = [max(1, int(round(fat_mm / s))) for s in spacing[:2]]
    near_organ = ndimage.binary_dilation(has_organ, structure=np.ones((2 * r[0] + 1, 2 * r[1] + 1), bool))
    reach = ndimage.minimum_filter(lowest_organ, size=(2 * r[0] + 1, 2 * r[1] + 1))
    floor = _diaphragm(lungs, spacing)
    own = np.where(near_organ, np.minimum(lowest_lung, reach), lowest_lung)
    floor = np.where(has_lung, np.maximum(floor, own), floor)
    return z[None, None, :] >= floor[:, :, None]


def _under_floor_tissue(region: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Voxels of ``soft`` inside ``region`` connected (3-D) to ``soft`` under the region's floor.

    The floor of each (x, y) column is its lowest region voxel (columns without region take the
    region's lowest slice). What is continuous with the tissue below it (diaphragm, liver dome, the
    inferior vena cava) bulges up into the space between the lung bases; the mediastinum's own soft
    tissue above the floor is separated from it by fat or belongs to an organ (excluded from ``soft``).
    """
    has = region.any(axis=2)
    if not has.any():
        return np.zeros_like(region)
    low = np.where(has, np.argmax(region, axis=2), 0)
    low = np.where(has, low, int(low[has].min()))
    below = soft & ~region & (np.arange(region.shape[2])[None, None, :] < low[:, :, None])
    return components_touching(soft, below) & region


def _heart(tissue: np.ndarray, lungs: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """Largest thick soft-tissue mass between the lungs with lung on both sides of it.

    An erosion of ``heart_core_mm`` leaves only structures thicker than the great vessels; the largest
    core that has lung to its left and to its right (so never the liver dome below the lungs) is the
    heart, grown back within soft tissue (an opening restricted to that core).
    """
    empty = np.zeros_like(tissue)
    if not tissue.any():
        return empty
    depth = depth_mm(tissue, spacing, 2.0 * cfg.heart_core_mm)
    core = depth > cfg.heart_core_mm
    if not core.any():
        return empty
    labels, n = ndimage.label(core)
    index = np.arange(1, n + 1)
    sizes = label_sums(labels, n)[1:]
    # lung on both sides at the core's level: its x range lies inside the lungs' x range on that level
    ok = np.zeros(n + 1, dtype=bool)
    # A liver or spleen dome under the lung base also has lung to its left and right, but lung lies
    # directly above nearly all of it (the lung base sits on the dome); above the heart lie the great
    # vessels, and lung only where the upper lobes overhang it.
    above_mm = cfg.heart_core_mm + 20.0
    k_up = max(1, int(round(above_mm / spacing[2])))
    for k, sl in zip(index, ndimage.find_objects(labels), strict=True):
        lz = lungs[:, :, sl[2]]
        lx = np.flatnonzero(lz.any(axis=(1, 2)))
        if lx.size and lx[0] < sl[0].start and lx[-1] >= sl[0].stop:
            ok[k] = _lung_above_share(labels[sl[0], sl[1]] == k, lungs[sl[0], sl[1]], k_up) < 0.8
    if not ok.any():
        return empty
    best = index[ok[1:]][np.argmax(sizes[ok[1:]])]
    core = labels == best
    if core.sum() * np.prod(spacing) / 1000.0 < 1.0:
        return empty
    # The aortic root and pulmonary trunk (radius up to ~20 mm) keep a core at a fixed erosion radius and
    # come back with the heart. The erosion radius is scaled to this heart's own thickness (its deepest
    # voxel), so that in a large heart the great vessels' cores vanish, while a small heart keeps one.
    radius = max(
        cfg.heart_core_mm, min(cfg.heart_core_ratio * float(depth[core].max()), 2 * cfg.heart_core_mm)
    )
    if radius > cfg.heart_core_mm:
        core = components_touching(depth > radius, core)
    heart = dilate_mm(core, radius + max(spacing) * 0.5, spacing) & tissue
    heart = largest_component(heart)
    if heart.sum() * np.prod(spacing) / 1000.0 < cfg.heart_min_ml:
        return empty
    return fill_holes_2d(heart)


def _lung_above_share(core: np.ndarray, lungs: np.ndarray, k_up: int) -> float:
    """Share of the core's (x, y) columns with lung within ``k_up`` slices above the core's top voxel."""
    cols = core.any(axis=2)
    nz = core.shape[2]
    top = nz - 1 - np.argmax(core[:, :, ::-1], axis=2)  # highest core voxel per column
    z = np.arange(nz)[None, None, :]
    window = (z > top[:, :, None]) & (z <= top[:, :, None] + k_up)
    hit = (lungs & window).any(axis=2)
    return float(hit[cols].mean()) if cols.any() else 0.0


def _spine(bone: np.ndarray, lung_l: np.ndarray, lung_r: np.ndarray) -> np.ndarray:
    """The vertebral column: of the long bone components at the lungs' level, the most posterior one.

    Long = spanning at least half of the lungs' z range (ribs are short in z); most posterior by mean y
    (RAS+: small y is posterior), so that a long sternum or a contrast-filled vessel is never taken.
    Only components whose mean x lies between the two lungs' centres count: in a crop the cut ends of
    ribs or a scapula at the lateral edge can be long and more posterior than the spine; and only those
    of at least ``SPINE_MIN_SHARE`` of the largest such component's volume.
    """
    lungs = lung_l | lung_r
    zs = lungs.any(axis=(0, 1))
    cand = bone & zs[None, None, :]
    labels, n = ndimage.label(cand)
    if n == 0:
        return cand
    extent = np.array([sl[2].stop - sl[2].start for sl in ndimage.find_objects(labels)])
    long_ = np.flatnonzero(extent >= 0.5 * min(zs.sum(), extent.max())) + 1
    n_all = int(labels.max())
    count = label_sums(labels, n_all)
    y_sum = label_sums(labels, n_all, np.broadcast_to(np.arange(cand.shape[1])[None, :, None], cand.shape))
    x_sum = label_sums(labels, n_all, np.broadcast_to(np.arange(cand.shape[0])[:, None, None], cand.shape))
    x_mean = x_sum[long_] / np.maximum(count[long_], 1)
    if lung_l.any() and lung_r.any():
        x_l = float(np.flatnonzero(lung_l.any(axis=(1, 2))).mean())
        x_r = float(np.flatnonzero(lung_r.any(axis=(1, 2))).mean())
        inner = (x_mean > min(x_l, x_r)) & (x_mean < max(x_l, x_r))
        if inner.any():
            long_ = long_[inner]
    # A thin posterior line (spinous process tips cut off by the field of view, or skin-level dense
    # material) can be long and more posterior than the spine: components under a quarter of the largest
    # long one's volume are not the column.
    long_ = long_[count[long_] >= SPINE_MIN_SHARE * count[long_].max()]
    y_mean = y_sum[long_] / np.maximum(count[long_], 1)
    return labels == long_[int(np.argmin(y_mean))]


@dataclass(frozen=True)
class SpineLine:
    """Per axial slice: whether the spine is there, its x centre and its anterior edge (voxel indices)."""

    has: np.ndarray
    x_c: np.ndarray
    y_f: np.ndarray

    def behind(self, ny: int, extra: float = 0.0) -> np.ndarray:
        """Voxels behind the vertebral body's anterior edge (+ ``extra`` voxels), where the spine is seen: (1, ny, nz)."""
        yf = np.where(self.has, np.nan_to_num(self.y_f, nan=-1.0) + extra, -1.0)
        return (np.arange(ny)[:, None] < yf[None, :])[None, :, :]

    def crop(self, box: tuple[slice, slice, slice]) -> SpineLine:
        sx, sy, sz = box
        return SpineLine(self.has[sz], self.x_c[sz] - sx.start, self.y_f[sz] - sy.start)


def _front_of_spine(spine: np.ndarray, dense: np.ndarray, spacing: Spacing) -> SpineLine:
    """The vertebral body's x centre and anterior edge in every slice where the spine is seen.

    ``spine`` is the bone component of the column (it may be the neural arch alone: at a coarse grid
    the vertebral body's thin cortex can look like a contrast blood pool, and its spongy interior can be
    below the bone threshold); ``dense`` is every dense voxel with small in-slice holes (spinal canal,
    spongy bone) filled. Within ``+-10 mm`` of the spine's midline the edge is found by walking forward
    from the most posterior spine voxel through ``dense`` until a gap: the vertebral body lies directly
    in front of the arch, while the sternum (which ribs may join to the spine) and a contrast-filled
    aorta (left of the midline, or across a fat plane) do not continue it. Discs are not dense and end
    the walk at the arch, so the edge is an upper percentile over ``+-12 mm`` in z; missing slices are
    interpolated.
    """
    has = spine.any(axis=(0, 1))
    nz = spine.shape[2]
    x_c = np.full(nz, np.nan)
    y_f = np.full(nz, np.nan)
    half = max(1, int(round(10.0 / spacing[0])))
    depth_px = _VERTEBRA_DEPTH_MM / spacing[1]
    for z in np.flatnonzero(has):
        sx, sy = np.nonzero(spine[:, :, z])
        xm = float(np.median(sx))
        band = slice(max(int(round(xm)) - half, 0), int(round(xm)) + half + 1)
        near = np.abs(sx - xm) <= half
        if near.any() and sy[near].min() > sy.min() + depth_px:
            # Ribs join the sternum to the column: where the vertebra is not in this slice's bone
            # component near its midline, what is there lies further forward than a whole vertebra's
            # depth (the sternum); the slice is interpolated from its neighbours instead.
            has[z] = False
            continue
        y0 = int(sy[near].min() if near.any() else sy.min())
        column = dense[band, y0:, z].any(axis=0)
        column[0] = True
        # the first run of two non-dense voxels ends the vertebra (one may be noise)
        stop = np.flatnonzero(~column[1:] & ~np.append(column[2:], False))
        walk = int(stop[0]) if stop.size else column.size - 1
        if walk * spacing[1] > _VERTEBRA_DEPTH_MM:
            # Longer than a whole vertebra (spinous process to body): the walk ran on into contrast
            # blood (a crop may hold only part of the spine); keep the bone component's own front.
            ys = np.unique(sy[near] if near.any() else sy)
            gaps = np.flatnonzero(np.diff(ys) * spacing[1] > 15.0)
            walk = int(ys[gaps[0]] if gaps.size else ys[-1]) - y0
        x_c[z], y_f[z] = xm, y0 + walk
    if has.sum() >= 2:
        zs = np.flatnonzero(has)
        k = max(2, int(round(12.0 / spacing[2])))
        # discs are not bone and end the walk at the neural arch: they only ever move the edge back,
        # so an upper percentile (not the median) over the window gives the vertebral bodies' front
        y_f[zs] = ndimage.percentile_filter(y_f[zs], 80, size=2 * k + 1, mode="nearest")
        x_c[zs] = ndimage.median_filter(x_c[zs], size=2 * k + 1, mode="nearest")
        lo, hi = zs[0], zs[-1]
        inner = np.arange(lo, hi + 1)
        y_f[lo : hi + 1] = np.interp(inner, zs, y_f[zs])
        x_c[lo : hi + 1] = np.interp(inner, zs, x_c[zs])
        has = has.copy()
        has[lo : hi + 1] = True
    return SpineLine(has, x_c, y_f)


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` grown by ``pad`` voxels, clipped to the volume."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(int(idx[0]) - pad, 0), min(int(idx[-1]) + pad + 1, mask.shape[axis])))
    return tuple(out)  # type: ignore[return-value]


def _esophagus(
    hu: np.ndarray,
    region: np.ndarray,
    spine: SpineLine,
    airway: np.ndarray,
    spacing: Spacing,
    cfg: IntensityConfig,
) -> np.ndarray:
    """Tube in front of the spine, behind the trachea: a disc of ``esophagus_radius_mm`` per slice.

    Its centre in each slice is the non-fat voxel (soft tissue or luminal air) of the mediastinal region
    closest to the expected position: behind the trachea where there is one, else ``radius + 4 mm`` in
    front of the vertebral body, following the centre of the slice above (it drifts left towards the
    hiatus). A shape prior, not a segmentation of its wall.
    """
    out = np.zeros_like(region)
    cand = region & ((hu > cfg.fat_hu_max) | (hu < cfg.lung_hu_max)) & ~airway
    if not cand.any() or not spine.has.any():
        return out
    has, x_c, y_f = spine.has, spine.x_c, spine.y_f
    r = cfg.esophagus_radius_mm
    gx = np.arange(region.shape[0])[:, None] * spacing[0]
    gy = np.arange(region.shape[1])[None, :] * spacing[1]
    prev: tuple[float, float] | None = None
    for z in np.flatnonzero(cand.any(axis=(0, 1)) & has)[::-1]:
        seed = nearest_seed(cand[:, :, z], (x_c[z], y_f[z]), prev, r, spacing)
        if seed is None:
            continue
        px, py = seed
        disc = (gx - px) ** 2 + (gy - py) ** 2 <= r * r
        sl = disc & cand[:, :, z]
        if sl.any():
            sx, sy = np.nonzero(sl)
            prev = (float(sx.mean() * spacing[0]), float(sy.mean() * spacing[1]))
        out[:, :, z] = sl
    return out


def _esophagus_neck(
    hu: np.ndarray,
    esophagus: np.ndarray,
    airway: np.ndarray,
    allowed: np.ndarray,
    spacing: Spacing,
    cfg: IntensityConfig,
) -> np.ndarray:
    """The esophagus above its highest slice found in the mediastinal space: a disc behind the trachea.

    In the neck and thoracic inlet the esophagus lies between the trachea and the spine, against the
    trachea's back wall: its centre is ``esophagus_radius_mm + 4 mm`` behind the airway's most posterior
    voxel, at the airway's x centre. Non-fat voxels (or luminal air) of ``allowed`` in that disc, with
    in-slice holes filled.
    """
    out = np.zeros_like(esophagus)
    zs = np.flatnonzero(esophagus.any(axis=(0, 1)))
    if zs.size == 0:
        return out
    r = cfg.esophagus_radius_mm
    cand = allowed & ((hu > cfg.fat_hu_max) | (hu < cfg.lung_hu_max)) & ~airway
    gx = np.arange(hu.shape[0])[:, None] * spacing[0]
    gy = np.arange(hu.shape[1])[None, :] * spacing[1]
    for z in range(int(zs[-1]) + 1, hu.shape[2]):
        ax, ay = np.nonzero(airway[:, :, z])
        if ax.size == 0:
            break
        cx, cy = float(ax.mean()) * spacing[0], float(ay.min()) * spacing[1] - (r + 4.0)
        disc = (gx - cx) ** 2 + (gy - cy) ** 2 <= r * r
        # as in the mediastinal fit: the ring between the air lumen and the wall is dark by partial
        # volume (synthetic esophagus 0.783 -> 0.785 over studies 0-39, 8 studies up, none down)
        out[:, :, z] = (
            ndimage.binary_fill_holes(disc & cand[:, :, z]) & disc & allowed[:, :, z] & ~airway[:, :, z]
        )
    return out


def _pleura(
    hu: np.ndarray,
    lungs: np.ndarray,
    allowed: np.ndarray,
    bone: np.ndarray,
    spacing: Spacing,
    cfg: IntensityConfig,
) -> np.ndarray:
    """Pleural space: a one-voxel shell (>= ``pleura_shell_mm``) outside the lungs against chest wall and
    diaphragm, plus fluid-density voxels (effusion) connected to it within ``effusion_max_mm`` of a lung.

    ``allowed`` excludes the mediastinum and the other organs, so the shell only lines the costal and
    diaphragmatic surfaces. Fluid is judged on a 3x3x3 mean (noise) and must lie inside the rib cage.
    """
    d_xy = max(cfg.pleura_shell_mm, 1.05 * max(spacing[0], spacing[1]))
    d_z = max(cfg.pleura_shell_mm, 1.05 * spacing[2])
    scaled = (spacing[0] / d_xy, spacing[1] / d_xy, spacing[2] / d_z)
    if all(s > 1.0 / np.sqrt(2) for s in scaled):
        # one voxel in every direction: a face-connected dilation is the same set, and much faster
        near = ndimage.binary_dilation(lungs)
    else:
        near = ndimage.distance_transform_edt(~lungs, sampling=scaled) <= 1.0
    shell = near & ~lungs & allowed
    lo, hi = cfg.effusion_hu
    smooth = ndimage.uniform_filter(hu, size=3)
    # Ribs run obliquely: in one slice only some of them are cut, so the cage is taken over +-15 mm in z.
    k = max(1, int(round(15.0 / spacing[2])))
    ribs = ndimage.maximum_filter1d(bone, size=2 * k + 1, axis=2) & lungs.any(axis=(0, 1))[None, None, :]
    cage = between_lungs(lungs | ribs)
    reach = _near_coarse(lungs, cfg.effusion_max_mm, spacing)
    fluid = allowed & cage & reach & (smooth >= lo) & (smooth <= hi) & ~lungs
    # An effusion is a collection at least a few voxels thick. The chest wall's muscle next to the shell
    # also falls in the fluid range (partial volume with fat and pleura) but only as a thin layer along
    # the wall: an opening with the 6-neighbourhood keeps collections more than two voxels thick.
    thick = ndimage.binary_opening(fluid, structure=_CROSS_3D)
    effusion = components_touching(thick | shell, shell) & thick
    if effusion.any():
        # Grow the collections back geodesically (a few voxels) through fluid and through the
        # partial-volume voxels between effusion and lung (darker than fluid, brighter than aerated
        # lung): their rims and thin tapering ends, with only a little of the wall muscle.
        # (judged on the voxel itself: next to rib or fat the 3x3x3 mean of a rim voxel leaves the range)
        partial = (hu > cfg.lung_hu_max) & (hu <= hi) & allowed & cage & ~lungs
        steps = max(1, int(round(cfg.effusion_regrow_mm / min(spacing))))
        effusion = ndimage.binary_dilation(
            effusion, structure=_CROSS_3D, iterations=steps, mask=fluid | partial | effusion
        )
    return shell | effusion


def _near_coarse(mask: np.ndarray, radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Within ``radius_mm`` of ``mask``, computed on a grid twice as coarse (a large, tolerant margin)."""
    small = mask[::2, ::2, ::2]
    if not small.any():
        return np.zeros_like(mask)
    near = ndimage.distance_transform_edt(~small, sampling=tuple(2 * s for s in spacing)) <= radius_mm
    out = np.repeat(np.repeat(np.repeat(near, 2, axis=0), 2, axis=1), 2, axis=2)
    return out[: mask.shape[0], : mask.shape[1], : mask.shape[2]] | mask
