"""Classical intensity backend: organ label map from HU thresholds and morphology, no learned weights.

Works on a coarse internal grid (``grid_mm``, block means) for speed and maps the labels back to the
input grid by nearest neighbour. The organs are found by the steps of :mod:`exact_ct.masks.steps`, one
module each; this module runs them in order and paints the label map.
"""

from __future__ import annotations

import numpy as np

from exact_ct.io import spacing_from_affine
from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.hu import CONTRAST_BLOOD_HU, blood_pool_hu
from exact_ct.masks.morph import (
    Spacing,
    bbox,
    between,
    block_mean,
    downsample_factors,
    fill_holes_2d,
    fill_small_holes_2d,
    nearer_to_first,
    upsample_labels,
)
from exact_ct.masks.steps.airway import track_airway
from exact_ct.masks.steps.airway_wall import airway_with_wall
from exact_ct.masks.steps.aorta_abdominal import aorta_unenhanced
from exact_ct.masks.steps.aorta_contrast import aorta_enhanced, ascending_from_above
from exact_ct.masks.steps.aorta_plain import aorta_plain
from exact_ct.masks.steps.body import find_body
from exact_ct.masks.steps.bone import find_bone
from exact_ct.masks.steps.bronchi import extend_main_bronchi
from exact_ct.masks.steps.esophagus import fit_esophagus, non_fat
from exact_ct.masks.steps.esophagus_prior import esophagus_disc, esophagus_neck
from exact_ct.masks.steps.heart import find_heart, heart_below_floor, ventricle_wall
from exact_ct.masks.steps.lungs import find_lungs
from exact_ct.masks.steps.mediastinum import above_floor, mediastinal_space, under_floor_tissue
from exact_ct.masks.steps.pleura import find_pleura
from exact_ct.masks.steps.spine import SpineLine, find_column, front_of_spine
from exact_ct.schema import ORGAN_IDS

LUNG_L, LUNG_R, AIRWAY, PLEURA = (ORGAN_IDS[n] for n in ("lung_left", "lung_right", "airway", "pleura"))
HEART, AORTA, ESOPHAGUS, MEDIASTINUM, BODY = (
    ORGAN_IDS[n] for n in ("heart", "aorta", "esophagus", "mediastinum", "body")
)
#: Padding (voxels) of the body's box, in which every other organ is searched ...
BODY_BOX_PAD = 1
#: ... and of the mediastinal space's box, in which heart, aorta and esophagus are searched.
MEDIASTINUM_BOX_PAD = 2


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
    box = bbox(labels > 0, pad=0)
    full = tuple(
        slice(b.start * f, min(b.stop * f, n)) for b, f, n in zip(box, factors, hu.shape, strict=True)
    )
    out[full] = upsample_labels(labels[box], factors, tuple(s.stop - s.start for s in full))
    return out


def segment_coarse(hu: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """All organs on the working grid; later organs never overwrite earlier, more certain ones."""
    body_full = find_body(hu, spacing, cfg)
    labels_full = np.zeros(hu.shape, dtype=np.uint8)
    if not body_full.any():
        return labels_full
    # Everything else works inside the body's bounding box: a chest fills only part of the field of view.
    crop = bbox(body_full, pad=BODY_BOX_PAD)
    labels_full[crop] = _organs(hu[crop], body_full[crop], spacing, cfg)
    return labels_full


def _organs(hu: np.ndarray, body: np.ndarray, spacing: Spacing, cfg: IntensityConfig) -> np.ndarray:
    """Every organ inside the body (cropped to its bounding box)."""
    air = body & (hu < cfg.lung_hu_max)
    lumen, _ = track_airway(air, hu, body, spacing, cfg)
    # the main bronchi followed on along their axis into the hilum, where the tracker loses them
    lumen = extend_main_bronchi(lumen, hu, air, spacing)
    # the wall drawn at sub-voxel precision around the tracked lumen
    airway = airway_with_wall(lumen, hu, air, spacing, cfg.airway_wall_mm)
    lung_air = air & ~airway
    lung_l, lung_r = find_lungs(lung_air, hu, spacing, cfg)
    lungs = lung_l | lung_r
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[body] = BODY
    if not lungs.any():
        labels[airway] = AIRWAY
        return labels
    # The trachea is only airway where it lies between or above the lungs, not bowel gas below.
    airway &= np.arange(hu.shape[2])[None, None, :] >= np.flatnonzero(lungs.any(axis=(0, 1)))[0]
    bone = find_bone(hu, body, between(lung_l, lung_r, axis=0), spacing, cfg)
    # The spinal canal and a vertebral body's spongy interior (below the bone threshold at a coarse
    # grid) belong to the spine: in-slice holes up to a vertebral body's section are filled, never the
    # chest, which ribs and sternum may close into a ring.
    hole_px = cfg.bone_hole_max_mm2 / (spacing[0] * spacing[1])
    bone_filled = fill_small_holes_2d(bone, hole_px)
    dense = fill_small_holes_2d(body & (hu >= cfg.bone_hu_min), hole_px)
    spine_bone = find_column(bone, lung_l, lung_r)
    spine = front_of_spine(spine_bone, dense, spacing)
    # The space's paravertebral limit uses the bone component's own front (it never reaches into a
    # blood pool): cutting a little less there costs nothing, the walk's error would cut the heart.
    # the vertebral column with its canal and spongy bone filled (also kept out of the aorta's search)
    column = fill_small_holes_2d(spine_bone, hole_px)
    arch = front_of_spine(spine_bone, column, spacing)
    region = mediastinal_space(lung_l, lung_r, body, arch, spacing) & ~bone_filled & ~airway
    heart, aorta, esophagus, blood_hu = _mediastinal_organs(
        hu, body, region, lungs, airway, bone_filled, column, spine, arch, spacing, cfg
    )
    # Above the mediastinal space (the neck) the esophagus lies directly behind the trachea.
    esophagus |= esophagus_neck(hu, esophagus, airway, body & ~bone_filled, spacing, cfg)
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
    region &= above_floor(lungs, heart | (aorta & region) | esophagus, spacing)
    # Soft tissue in that space that runs on under its floor is the diaphragm, the liver dome or the
    # inferior vena cava's entry, not mediastinum (whose own contents above the floor are fat and organs).
    dome = under_floor_tissue(region, body & (hu > cfg.fat_hu_max) & ~organs & ~bone_filled & ~lungs)
    region &= ~dome
    pleural = find_pleura(hu, lungs, body & ~region & ~organs & ~bone_filled & ~dome, bone, spacing, cfg)
    labels[region & ~pleural] = MEDIASTINUM
    labels[pleural] = PLEURA
    labels[aorta] = AORTA
    labels[esophagus] = ESOPHAGUS
    labels[heart] = HEART
    labels[lung_l] = LUNG_L
    labels[lung_r] = LUNG_R
    labels[airway] = AIRWAY
    return labels


def _mediastinal_organs(
    hu: np.ndarray,
    body: np.ndarray,
    region: np.ndarray,
    lungs: np.ndarray,
    airway: np.ndarray,
    bone_filled: np.ndarray,
    column: np.ndarray,
    spine: SpineLine,
    arch: SpineLine,
    spacing: Spacing,
    cfg: IntensityConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
    """Heart, aorta and esophagus of the mediastinal space, and the blood pool's median HU (None: no heart).

    They are searched only in the box around the space: the distance transforms there cost a fraction
    of whole-volume ones. The aorta of a contrast CT is followed through the whole body.
    """
    heart, aorta, esophagus = (np.zeros_like(region) for _ in range(3))
    if not region.any():
        return heart, aorta, esophagus, None
    box = bbox(region, pad=MEDIASTINUM_BOX_PAD)
    hu_b, region_b, lungs_b, airway_b = hu[box], region[box], lungs[box], airway[box]
    spine_b = spine.crop(box)
    # Soft tissue and blood (with or without contrast); mediastinal fat and air are not.
    tissue = region_b & (hu_b > cfg.fat_hu_max)
    heart[box] = heart_b = find_heart(tissue, lungs_b, spacing, cfg)
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
            eso_b = fit_esophagus(hu_b, region_b & ~heart_b, spine_b, airway_b, spacing, cfg, aorta=aorta_b)
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
        # on its fat boundary (exact_ct.masks.steps.aorta_plain). The esophagus's fixed-size disc goes
        # first, so that the track does not run into it; the fitted esophagus (wider where the tube
        # is) splits the overlap with the aorta and then yields to it.
        eso_b = esophagus_disc(non_fat(hu_b, region_b & ~heart_b, airway_b, cfg), spine_b, spacing, cfg)
        eso_fit = fit_esophagus(hu_b, region_b & ~heart_b, spine_b, airway_b, spacing, cfg)
        aorta[box] = aorta_plain(hu_b, region_b, tissue, heart_b, eso_b, spine_b, spacing, cfg, eso_fit)
        esophagus[box] = eso_fit & ~aorta[box]
        heart &= ~aorta  # the aortic root, continued inside the heart's outline
    return heart, aorta, esophagus, blood_hu
