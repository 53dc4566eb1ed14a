"""Linear-probe study vectors of a from-scratch network pooled in the pretrained package's organs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exact_ct.dataset.grid import GridPlan
from exact_ct.model.config import NetworkConfig, PoolingConfig
from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage
from exact_ct.transfer.embed import embedding_dim, organ_embeddings
from exact_ct.transfer.model import build_net
from exact_ct.transfer.probe import probe_features, probe_features_in_base_organs, scratch_exact_net

NET = NetworkConfig(channels=(4, 8))
PLAN = GridPlan((8.0, 8.0, 8.0), (16, 16, 16))


@pytest.fixture(scope="module")
def base() -> ModelPackage:
    torch.manual_seed(0)
    return ModelPackage(ExactNet(NET).eval(), NET, PoolingConfig(), PLAN)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).normal(size=(3, 1, 16, 16, 16)).astype(np.float32))


def test_default_network_reproduces_probe_features(base: ModelPackage, images: torch.Tensor) -> None:
    np.testing.assert_allclose(
        probe_features_in_base_organs(images, base), probe_features(images, base), rtol=1e-5, atol=1e-6
    )


def test_scratch_vectors_differ_have_the_same_shape_and_are_seeded(
    base: ModelPackage, images: torch.Tensor
) -> None:
    pre = probe_features_in_base_organs(images, base)
    s1 = probe_features_in_base_organs(images, base, scratch_exact_net(base, 1))
    s1_again = probe_features_in_base_organs(images, base, scratch_exact_net(base, 1))
    s2 = probe_features_in_base_organs(images, base, scratch_exact_net(base, 2))
    assert pre.shape == s1.shape == (3, 9 * embedding_dim(base.net) + 18)
    np.testing.assert_array_equal(s1, s1_again)
    assert not np.allclose(s1, pre) and not np.allclose(s1, s2)
    # Same organs for both arms: an organ block is zero (absent) in one exactly when in the other.
    dim = embedding_dim(base.net)
    present = lambda v: np.abs(v[:, : 9 * dim].reshape(len(v), 9, dim)).sum(-1) > 0  # noqa: E731
    np.testing.assert_array_equal(present(pre), present(s1))


def test_given_organs_replace_the_networks_own(base: ModelPackage, images: torch.Tensor) -> None:
    img = images[0]
    organ_probs = torch.zeros((1, 10, 16, 16, 16))
    organ_probs[:, 3, :8] = 1.0  # left half organ 3, right half organ 5
    organ_probs[:, 5, 8:] = 1.0
    emb = organ_embeddings(base, img.numpy(), net=scratch_exact_net(base, 4), organ_probs=organ_probs)
    assert emb.organ_ids.tolist() == [3, 5] and emb.voxels.tolist() == [8 * 16 * 16, 8 * 16 * 16]


def test_scratch_net_is_the_fine_tune_scratch_trunk_and_keeps_the_global_rng(base: ModelPackage) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    net = scratch_exact_net(base, 7)
    assert torch.equal(torch.rand(1), before)
    trunk = build_net(NET, base, pretrained=False, maps_input=False, seed=7).trunk.state_dict()
    state = net.state_dict()
    shared = [k for k in trunk if not k.startswith("anomaly_head_full.")]
    assert shared and all(torch.equal(trunk[k], state[k]) for k in shared)
