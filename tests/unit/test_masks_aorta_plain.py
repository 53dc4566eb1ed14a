"""Unenhanced aorta: fat-boundary circle fit beside a touching organ, steady spine front, whole tube."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.morph import inplane_distance
from exact_ct.masks.steps.aorta_plain import aorta_plain
from exact_ct.masks.steps.aorta_plain_fit import fit_fixed
from exact_ct.masks.steps.spine import SpineLine, steady_spine

SPACING = (3.0, 3.0, 4.0)
SHAPE = (40, 40, 14)
SPINE_X, SPINE_Y = 20, 8  # voxel indices: midline and vertebral bodies' front
AORTA_C, AORTA_R = (60.0 - 25.0, 8 * 3.0 + 5.0 + 11.0), 11.0  # mm: left-anterior of the spine
ESO_C, ESO_R = (AORTA_C[0] + AORTA_R + 7.0, AORTA_C[1]), 8.0  # touching it on the right


def _disc(centre: tuple[float, float], radius: float) -> np.ndarray:
    gx = np.arange(SHAPE[0])[:, None] * SPACING[0]
    gy = np.arange(SHAPE[1])[None, :] * SPACING[1]
    return (gx - centre[0]) ** 2 + (gy - centre[1]) ** 2 <= radius**2


def _phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fat with an unenhanced aorta (40 HU) and an esophagus (38 HU) touching it: no edge between them."""
    aorta, eso = _disc(AORTA_C, AORTA_R), _disc(ESO_C, ESO_R)
    sl = np.where(aorta | eso, 40.0, -95.0)
    hu = np.repeat(ndimage.gaussian_filter(sl, 0.55)[:, :, None], SHAPE[2], axis=2)
    hu += np.random.default_rng(0).normal(0.0, 6.0, hu.shape)
    return hu, aorta, eso


def _spine() -> SpineLine:
    nz = SHAPE[2]
    return SpineLine(np.ones(nz, dtype=bool), np.full(nz, float(SPINE_X)), np.full(nz, float(SPINE_Y)))


def test_fit_recentres_on_fat_boundary_despite_touching_organ() -> None:
    hu, aorta, eso = _phantom()
    stop = np.zeros(SHAPE[:2], dtype=bool)
    # The distance map's maximum of the merged soft tissue is pulled towards the touching esophagus ...
    tissue = hu[:, :, :1] > -30.0
    d2 = inplane_distance(tissue, SPACING)[:, :, 0]
    i, j = np.unravel_index(int(np.argmax(np.where(aorta, d2, -1.0))), d2.shape)
    start = (i * SPACING[0] + 4.0, j * SPACING[1])  # ... and a start further towards it
    c = fit_fixed(hu[:, :, 0], stop, start, AORTA_R, SPACING, -30.0)
    assert c is not None
    assert np.hypot(c[0] - AORTA_C[0], c[1] - AORTA_C[1]) < 1.5
    assert np.hypot(start[0] - AORTA_C[0], start[1] - AORTA_C[1]) > 3.0


def test_steady_spine_replaces_a_run_of_outlying_fronts() -> None:
    nz = 20
    y_f = np.full(nz, 10.0)
    y_f[8:12] = 55.0  # a walk that ran on into the sternum
    spine = SpineLine(np.ones(nz, dtype=bool), np.full(nz, 30.0), y_f)
    fixed = steady_spine(spine, SPACING)
    np.testing.assert_allclose(fixed.y_f, 10.0)
    assert spine.y_f[9] == 55.0  # input not modified
    assert steady_spine(SpineLine(spine.has, spine.x_c, np.full(nz, 10.0)), SPACING).y_f[9] == 10.0


def test_aorta_plain_takes_the_tube_not_the_touching_esophagus() -> None:
    hu, aorta, eso = _phantom()
    region = np.ones(SHAPE, dtype=bool)
    tissue = region & (hu > -30.0)
    heart = np.zeros(SHAPE, dtype=bool)
    # the esophagus's fixed-size shape prior, placed on the esophagus itself
    eso_disc = np.repeat(_disc(ESO_C, 6.0)[:, :, None], SHAPE[2], axis=2)
    out = aorta_plain(hu, region, tissue, heart, eso_disc, _spine(), SPACING, IntensityConfig())
    truth = np.repeat(aorta[:, :, None], SHAPE[2], axis=2)
    eso3 = np.repeat((eso & ~aorta)[:, :, None], SHAPE[2], axis=2)
    dice = 2 * (out & truth).sum() / (out.sum() + truth.sum())
    assert dice > 0.85
    assert (out & eso3).sum() < 0.15 * eso3.sum()


def test_aorta_plain_empty_without_a_tube() -> None:
    hu = np.full(SHAPE, -95.0)
    region = np.ones(SHAPE, dtype=bool)
    z = np.zeros(SHAPE, dtype=bool)
    out = aorta_plain(hu, region, region & (hu > -30.0), z, z, _spine(), SPACING, IntensityConfig())
    assert not out.any()


def test_wall_against_the_lung_is_found_at_half_maximum_not_a_voxel_inside() -> None:
    """Blur darkens a section's outermost voxel beside the lung below the fat threshold: the wall there lies
    half way between the section's level and the lung's, as it does against fat."""
    from exact_ct.masks.rays import RayFan, ray_ends

    centre, radius = (60.0, 60.0), 11.0
    gx = np.arange(40)[:, None] * SPACING[0]
    gy = np.arange(40)[None, :] * SPACING[1]
    disc = (gx - centre[0]) ** 2 + (gy - centre[1]) ** 2 <= radius**2
    lung = (gx < centre[0] - radius + 0.5) & ~disc  # the lung touches the section on its low-x side
    hu = ndimage.gaussian_filter(np.where(disc, 40.0, np.where(lung, -850.0, -95.0)), 0.55)
    fan = RayFan(n_rays=24, dense_hu=200.0)
    px, py = ray_ends(hu, np.zeros_like(disc), centre, 1.6 * radius, SPACING, -30.0, fan)
    r = np.hypot(px - centre[0], py - centre[1])
    angle = np.degrees(np.arctan2(py - centre[1], px - centre[0])) % 360
    lung_side, fat_side = r[(angle > 145) & (angle < 215)], r[(angle < 35) | (angle > 325)]
    assert len(lung_side) == 5 and len(fat_side) == 5
    # the fat threshold alone ended these rays 7.75-8.75 mm out, a voxel inside the wall
    assert lung_side.min() > radius - 1.5 and abs(lung_side.mean() - fat_side.mean()) < 1.0
