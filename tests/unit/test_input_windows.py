"""HU windows as input channels: normalisation, plan round trip, and a package that runs from them."""

from __future__ import annotations

import numpy as np
import torch

from exact_ct.dataset.grid import GridPlan, normalise
from exact_ct.model.config import NetworkConfig, PoolingConfig
from exact_ct.model.inference import infer_volume
from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage, load_package, save_package

WINDOWS = ((-1024.0, -600.0), (-160.0, 240.0), (100.0, 1100.0))


def test_single_window_plan_is_the_classic_zscore_with_a_channel_axis() -> None:
    plan = GridPlan((4.0, 4.0, 4.0), (8, 8, 8), clip_hu=(-900.0, 400.0), mean_hu=-100.0, std_hu=200.0)
    hu = np.array([[[-1024.0, -900.0, 0.0, 1000.0]]], np.float32)
    out = normalise(hu, plan)
    assert plan.in_channels == 1 and out.shape == (1, *hu.shape) and out.dtype == np.float32
    np.testing.assert_allclose(out[0].ravel(), [(-900 + 100) / 200, (-900 + 100) / 200, 0.5, 2.5])


def test_windows_keep_emphysema_and_calcification_that_the_body_clip_removes() -> None:
    plan = GridPlan((4.0, 4.0, 4.0), (8, 8, 8), clip_hu=(-907.0, 454.0), windows_hu=WINDOWS)
    emphysema, lung, calcium, metal = -970.0, -860.0, 600.0, 2500.0
    hu = np.array([[[emphysema, lung, calcium, metal]]], np.float32)
    out = normalise(hu, plan)
    assert out.shape == (3, 1, 1, 4) and out.min() >= -1.0 and out.max() <= 1.0
    assert out[0, 0, 0, 0] < out[0, 0, 0, 1]  # the lung window separates emphysema from normal lung
    assert out[2, 0, 0, 2] < out[2, 0, 0, 3] and out[2, 0, 0, 3] == 1.0  # dense window: calcium < metal
    # ... whereas the classic body-percentile clip maps mild and severe emphysema onto one value
    classic = GridPlan((4.0,) * 3, (8, 8, 8), clip_hu=(-907.0, 454.0))
    z = normalise(np.array([[[-990.0, -950.0, 600.0, 2500.0]]], np.float32), classic)
    assert z[0, 0, 0, 0] == z[0, 0, 0, 1] and z[0, 0, 0, 2] == z[0, 0, 0, 3]
    w = normalise(np.array([[[-990.0, -950.0, 600.0, 2500.0]]], np.float32), plan)
    assert w[0, 0, 0, 0] < w[0, 0, 0, 1] and w[2, 0, 0, 2] < w[2, 0, 0, 3]


def test_plan_json_round_trip_and_old_plans_without_windows() -> None:
    plan = GridPlan((6.0, 6.0, 6.0), (16, 16, 8), windows_hu=WINDOWS)
    again = GridPlan.from_json(plan.to_json())
    assert again == plan and again.in_channels == 3
    old = plan.to_json()
    del old["windows_hu"]
    assert GridPlan.from_json(old).in_channels == 1


def test_package_with_windows_infers_from_the_package_alone(tmp_path) -> None:
    torch.manual_seed(0)
    net_cfg = NetworkConfig(channels=(4, 8))
    plan = GridPlan((8.0, 8.0, 8.0), (8, 8, 8), windows_hu=WINDOWS)
    pkg = ModelPackage(ExactNet(net_cfg, plan.in_channels), net_cfg, PoolingConfig(), plan)
    loaded = load_package(save_package(pkg, tmp_path / "m"))
    assert loaded.plan.windows_hu == WINDOWS and loaded.net.encoder[0] is not None
    first_conv = next(m for m in loaded.net.encoder[0].modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.in_channels == len(WINDOWS)  # the package rebuilt a 3-channel network from its plan
    hu = np.full((20, 20, 12), -800.0, np.float32)
    probs, organs, maps = infer_volume(hu, np.diag([4.0, 4.0, 4.0, 1.0]), loaded)
    assert len(probs) == 18 and organs.shape == hu.shape and maps.shape == (*hu.shape, 18)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
