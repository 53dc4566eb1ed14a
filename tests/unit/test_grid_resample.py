"""grid.to_canonical: the separable fast path agrees with the generic scipy resampling it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from exact_ct.dataset.grid import GridPlan, grid_affine, resample, to_canonical

# Model grid: 6 x 5 x 4 mm, 12 x 10 x 9 voxels. Canonical grid: 2.5 x 3.1 x 7 mm (non-isotropic),
# 30 x 14 x 6 voxels, shifted so that it sticks out of the model grid along x (padding, maps are 0
# there) and is smaller than it along y (a crop of the model grid).
PLAN = GridPlan(spacing_xyz_mm=(6.0, 5.0, 4.0), size_xyz=(12, 10, 9))
G_AFF = grid_affine(PLAN, (3.0, -7.5, 11.0))
SRC_SHAPE = (30, 14, 6)
SRC_AFF = np.array(
    [
        [2.5, 0.0, 0.0, -60.3],
        [0.0, 3.1, 0.0, -25.7],
        [0.0, 0.0, 7.0, -4.2],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _map_coordinates_reference(grid_array: np.ndarray, order: int) -> np.ndarray:
    """The old formula written out: every canonical voxel's model-grid coordinate, then scipy."""
    matrix = np.linalg.inv(G_AFF) @ SRC_AFF
    vox = np.stack(np.meshgrid(*[np.arange(n) for n in SRC_SHAPE], indexing="ij"), 0).reshape(3, -1)
    coords = matrix[:3, :3] @ vox + matrix[:3, 3:4]
    channels = grid_array[..., None] if grid_array.ndim == 3 else grid_array
    out = np.stack(
        [
            ndimage.map_coordinates(
                channels[..., c], coords, order=order, mode="constant", cval=0.0, prefilter=False
            ).reshape(SRC_SHAPE)
            for c in range(channels.shape[-1])
        ],
        -1,
    )
    return out if grid_array.ndim == 4 else out[..., 0]


def test_linear_maps_agree_with_the_generic_resampler_on_every_channel() -> None:
    rng = np.random.default_rng(3)
    maps = rng.random((*PLAN.size_xyz, 18), dtype=np.float32)
    fast = to_canonical(maps, G_AFF, SRC_AFF, SRC_SHAPE, order=1, dtype=np.float32)
    old = resample(maps, G_AFF, SRC_AFF, SRC_SHAPE, order=1, cval=0.0, dtype=np.float32)
    ref = _map_coordinates_reference(maps, order=1)
    assert fast.shape == (*SRC_SHAPE, 18) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, old, rtol=0, atol=2e-6)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=2e-6)
    # the field of view is the same voxel for voxel: padding outside the crop stays exactly 0
    inside = (old != 0).any(-1)
    assert 0 < inside.mean() < 1  # the case does exercise both padding and interpolation
    np.testing.assert_array_equal((fast != 0).any(-1), inside)
    # NIfTI's layout: x varies fastest, so the 4D writer needs no transposing copy
    assert fast.flags.f_contiguous


def test_linear_single_volume_and_float64_input() -> None:
    rng = np.random.default_rng(4)
    vol = rng.normal(size=PLAN.size_xyz)  # float64 in, float32 out as before
    fast = to_canonical(vol, G_AFF, SRC_AFF, SRC_SHAPE, order=1, dtype=np.float32)
    old = resample(vol, G_AFF, SRC_AFF, SRC_SHAPE, order=1, cval=0.0, dtype=np.float32)
    assert fast.shape == SRC_SHAPE and fast.dtype == np.float32
    np.testing.assert_allclose(fast, old, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shift", [0.0, 0.5, 0.25])
def test_nearest_labels_are_identical_including_half_voxel_ties(shift: float) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 10, size=PLAN.size_xyz, dtype=np.uint8)
    # canonical spacing half the model spacing: many canonical voxels fall exactly between two
    src_aff = np.diag([3.0, 2.5, 2.0, 1.0])
    src_aff[:3, 3] = G_AFF[:3, 3] + np.array([-4.0, shift * 5.0, 1.0 - shift * 4.0])
    shape = (26, 22, 19)
    fast = to_canonical(labels, G_AFF, src_aff, shape, order=0, dtype=np.uint8)
    old = resample(labels, G_AFF, src_aff, shape, order=0, cval=0, dtype=np.uint8)
    assert fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, old)
    assert 0 < (fast == 0).mean() < 1


def test_nearest_on_channels_matches_map_coordinates() -> None:
    rng = np.random.default_rng(6)
    arr = rng.random((*PLAN.size_xyz, 3), dtype=np.float32)
    fast = to_canonical(arr, G_AFF, SRC_AFF, SRC_SHAPE, order=0)
    np.testing.assert_array_equal(fast, _map_coordinates_reference(arr, order=0))


def test_oblique_integer_and_non_finite_inputs_take_the_generic_path() -> None:
    rng = np.random.default_rng(7)
    vol = rng.random(PLAN.size_xyz, dtype=np.float32)
    theta = np.deg2rad(10.0)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    oblique = rot @ SRC_AFF
    for aff, arr, dtype in (
        (oblique, vol, np.float32),  # not separable
        (SRC_AFF, (vol * 1000).astype(np.int16), np.int16),  # order 1 into integers: rounding as before
        (SRC_AFF, np.where(vol > 0.9, np.nan, vol).astype(np.float32), np.float32),  # NaN stays local
    ):
        fast = to_canonical(arr, G_AFF, aff, SRC_SHAPE, order=1, dtype=dtype)
        old = resample(arr, G_AFF, aff, SRC_SHAPE, order=1, cval=0.0, dtype=dtype)
        np.testing.assert_array_equal(fast, old)
