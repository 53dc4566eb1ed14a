"""Localization metrics on crafted maps and masks."""

from __future__ import annotations

import numpy as np
import pytest

from exact_ct.evaluation import localization as L


def _blob(shape: tuple[int, int, int], lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def test_pointing_game_hit_miss_and_tolerance() -> None:
    mask = _blob((10, 10, 10), (2, 2, 2), (4, 4, 4))
    m = np.zeros((10, 10, 10))
    m[3, 3, 3] = 1.0
    assert L.pointing_hit(m, mask)
    m2 = np.zeros((10, 10, 10))
    m2[5, 3, 3] = 1.0  # two voxels from the lesion's edge (x = 3)
    assert not L.pointing_hit(m2, mask, (4.0, 4.0, 4.0), tolerance_mm=4.0)
    assert L.pointing_hit(m2, mask, (4.0, 4.0, 4.0), tolerance_mm=8.0)
    with pytest.raises(ValueError):
        L.pointing_hit(m, np.zeros_like(mask))


def test_topk_mask_keeps_exactly_k_percent_of_the_region() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((10, 10, 10))
    region = _blob((10, 10, 10), (0, 0, 0), (10, 10, 5))  # 500 voxels
    top = L.topk_mask(m, 5.0, region)
    assert top.sum() == 25 and not (top & ~region).any()
    assert m[top].min() >= m[region & ~top].max()


def test_dice_of_topk_map_and_hit() -> None:
    mask = _blob((20, 20, 20), (0, 0, 0), (2, 2, 2))  # 8 voxels = 0.1 % of 8000
    m = np.zeros((20, 20, 20))
    m[mask] = 1.0
    r = L.localize_one(m, mask, None, spacing_mm=(1, 1, 1), topk_percent=0.1, tolerance_mm=0, hit_dice=0.1)
    assert r == {"pointing": True, "dice_topk": 1.0, "hit": True}
    far = np.zeros((20, 20, 20))
    far[15:, 15:, 15:] = 1.0
    r2 = L.localize_one(far, mask, None, spacing_mm=(1, 1, 1), topk_percent=0.1, tolerance_mm=0, hit_dice=0.1)
    assert r2 == {"pointing": False, "dice_topk": 0.0, "hit": False}
    s = L.summarise({"x": [r, r2], "y": []})
    assert s["per_abnormality"]["x"] == {"findings": 2, "pointing_game": 0.5, "dice_topk": 0.5, "hit": 0.5}
    assert "y" not in s["per_abnormality"] and s["overall"]["findings"] == 2


def test_organ_dice_per_organ() -> None:
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[:2] = 1
    ref[2:] = 2
    pred = ref.copy()
    pred[1] = 2  # half of lung_left predicted as lung_right
    d = L.organ_dice(pred, ref)
    assert d["lung_left"] == pytest.approx(2 * 16 / (16 + 32))
    assert d["lung_right"] == pytest.approx(2 * 32 / (48 + 32))
    assert d["heart"] is None
    agg = L.mean_organ_dice([d, L.organ_dice(ref, ref)])
    assert agg["per_organ"]["lung_left"] == pytest.approx((2 / 3 + 1) / 2)
    assert agg["studies"] == 2
