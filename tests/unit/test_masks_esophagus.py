"""Esophagus of the intensity backend: circle fit, air lumen, and a tube beside a touching aorta."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.rays import fit_circle
from exact_ct.masks.steps.esophagus import fill_lumen, fit_esophagus
from exact_ct.masks.steps.spine import SpineLine

SPACING = (3.0, 3.0, 4.0)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    gx = np.arange(shape[0])[:, None] * SPACING[0]
    gy = np.arange(shape[1])[None, :] * SPACING[1]
    return (gx - centre[0]) ** 2 + (gy - centre[1]) ** 2 <= radius**2


def _phantom(
    radius: float, air: bool, aorta_hu: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, SpineLine]:
    """Fat, a vertebral body, a tube of ``radius`` 10 mm in front of it and an aorta touching it on the left."""
    nx, ny, nz = 40, 40, 12
    hu = np.full((nx, ny, nz), -95.0)
    spine_c, spine_r = (60.0, 30.0), 15.0
    eso_c = (spine_c[0], spine_c[1] + spine_r + 10.0)
    aorta_c, aorta_r = (eso_c[0] - radius - 10.0, eso_c[1]), 11.0  # to the left (-x), touching
    truth = _disc((nx, ny), eso_c, radius)
    aorta = _disc((nx, ny), aorta_c, aorta_r) & ~truth
    bone = _disc((nx, ny), spine_c, spine_r)
    sl = np.where(bone, 400.0, np.where(truth, 38.0, np.where(aorta, aorta_hu, -95.0)))
    if air:
        sl = np.where(_disc((nx, ny), eso_c, 2.0), -900.0, sl)
    hu[:] = ndimage.gaussian_filter(sl, 0.55)[:, :, None]
    hu += np.random.default_rng(0).normal(0.0, 6.0, hu.shape)
    region = np.ones(hu.shape, dtype=bool)
    region[bone] = False
    front = (spine_c[1] + spine_r) / SPACING[1]
    spine = SpineLine(np.ones(nz, dtype=bool), np.full(nz, spine_c[0] / SPACING[0]), np.full(nz, front))
    return hu, region, np.repeat(truth[:, :, None], nz, axis=2), spine


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_fit_circle_recovers_centre_and_radius() -> None:
    t = np.linspace(0, 1.5 * np.pi, 12)  # a three-quarter arc: one side hidden by a neighbour
    cx, cy, r = fit_circle(20.0 + 9.0 * np.cos(t), -5.0 + 9.0 * np.sin(t))
    assert (cx, cy, r) == pytest.approx((20.0, -5.0, 9.0), abs=1e-6)


def test_fill_lumen_fills_small_pocket_not_fat_gap() -> None:
    hu = np.full((9, 9, 1), 40.0)
    hu[4, 4, 0] = -450.0  # a blurred air lumen inside soft tissue
    hu[:, 0, 0] = -95.0  # a fat border: dark, but its rim is not soft tissue all round
    region = np.ones_like(hu, dtype=bool)
    out = fill_lumen(hu, region, np.zeros_like(region), SPACING)
    assert out[4, 4, 0] >= 0.0
    assert (out[:, 0, 0] == -95.0).all()


@pytest.mark.parametrize(("radius", "air"), [(7.5, False), (10.0, True)])
def test_tube_beside_unenhanced_aorta(radius: float, air: bool) -> None:
    hu, region, truth, spine = _phantom(radius, air, aorta_hu=42.0)
    cfg = IntensityConfig()
    out = fit_esophagus(hu, region, spine, np.zeros_like(region), SPACING, cfg)
    # the fitted section follows the tube's own size; the old 8 mm disc on the nearest voxel did not
    assert _dice(out, truth) >= 0.85
    aorta_side = np.arange(hu.shape[0])[:, None, None] * SPACING[0] < 60.0 - radius - 3.0
    assert (out & aorta_side).sum() <= 0.05 * out.sum()


def test_contrast_aorta_section_is_given_back() -> None:
    hu, region, truth, spine = _phantom(9.0, False, aorta_hu=250.0)
    # the aorta found before: its lumen plus a soft-tissue rim grown into the esophagus
    lumen = hu > 150.0
    aorta = ndimage.binary_dilation(lumen, structure=np.ones((5, 5, 1), dtype=bool)) & region
    assert (aorta & truth).any()
    cfg = IntensityConfig()
    out = fit_esophagus(hu, region & ~lumen, spine, np.zeros_like(region), SPACING, cfg, aorta=aorta)
    assert not (out & lumen).any()
    assert _dice(out, truth) >= 0.85


def test_prevertebral_tissue_is_not_the_tube() -> None:
    """Soft tissue between the tube and the vertebral body (longus colli, ligament): rays ending at bone are dropped."""
    nx, ny, nz = 40, 40, 12
    spine_c, spine_r, radius = (60.0, 30.0), 15.0, 8.0
    front = spine_c[1] + spine_r
    eso_c = (spine_c[0], front + 10.0)
    gx = np.arange(nx)[:, None] * SPACING[0]
    gy = np.arange(ny)[None, :] * SPACING[1]
    band = (np.abs(gx - spine_c[0]) < spine_r + 14.0) & (gy < front + 6.0)
    truth = _disc((nx, ny), eso_c, radius)
    bone = _disc((nx, ny), spine_c, spine_r)
    sl = np.where(bone, 400.0, np.where(truth | band, 40.0, -95.0))
    hu = np.repeat(ndimage.gaussian_filter(sl, 0.55)[:, :, None], nz, axis=2)
    hu += np.random.default_rng(1).normal(0.0, 6.0, hu.shape)
    region = np.repeat(~bone[:, :, None], nz, axis=2)
    spine = SpineLine(
        np.ones(nz, dtype=bool), np.full(nz, spine_c[0] / SPACING[0]), np.full(nz, front / SPACING[1])
    )
    out = fit_esophagus(hu, region, spine, np.zeros_like(region), SPACING, IntensityConfig())
    cy = np.nonzero(out)[1].mean() * SPACING[1]
    # rays through the band to the bone had pulled the fit back (centre 1.0 mm behind, Dice 0.94)
    assert abs(cy - eso_c[1]) <= 0.5
    assert _dice(out, np.repeat(truth[:, :, None], nz, axis=2)) >= 0.97
