"""Network shapes, organ-confined MIL pooling, losses with uncertain labels, model package and inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exact_ct.model.config import NetworkConfig, PoolingConfig
from exact_ct.model.losses import (
    LossConfig,
    OrganLoss,
    apply_uncertain_policy,
    organ_loss_weight,
    pos_weight_from_labels,
    pseudo_mask_probability,
    weighted_bce,
)
from exact_ct.model.network import ExactNet
from exact_ct.model.pooling import OrganConfinedMILPool, region_masks, region_matrix, topk_mean
from exact_ct.schema import ABNORMALITIES, NUM_ORGAN_CLASSES, ORGAN_IDS, abnormality_index

TINY = NetworkConfig(channels=(4, 8, 16))
NODULE = abnormality_index("Lung nodule")


def one_hot(labels: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(labels.astype(np.int64))
    return torch.nn.functional.one_hot(t, NUM_ORGAN_CLASSES).permute(3, 0, 1, 2)[None].float()


def two_lung_organs(shape: tuple[int, int, int] = (8, 8, 8)) -> np.ndarray:
    organs = np.full(shape, ORGAN_IDS["body"], np.uint8)
    organs[:3] = ORGAN_IDS["lung_left"]
    organs[5:] = ORGAN_IDS["lung_right"]
    return organs


def test_network_output_shapes_half_and_full() -> None:
    torch.manual_seed(0)
    net = ExactNet(TINY)
    out = net(torch.randn(2, 1, 16, 16, 8))
    assert out.organ_logits.shape == (2, NUM_ORGAN_CLASSES, 16, 16, 8)
    assert out.anomaly_logits_full.shape == (2, len(ABNORMALITIES), 16, 16, 8)
    assert out.anomaly_logits_half.shape == (2, len(ABNORMALITIES), 8, 8, 4)
    # maps start low (most voxels are normal), not at 0.5
    assert out.anomaly_logits_full.sigmoid().mean() < 0.2


def test_network_rejects_sizes_not_divisible_by_levels() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        ExactNet(TINY)(torch.randn(1, 1, 16, 16, 10))


def test_plain_backbone_builds_and_runs() -> None:
    out = ExactNet(NetworkConfig(backbone="plain", channels=(4, 8)))(torch.randn(1, 1, 8, 8, 8))
    assert out.anomaly_logits_half.shape == (1, len(ABNORMALITIES), 4, 4, 4)


def test_anomaly_decoder_uses_organ_decoder_features() -> None:
    # Perturbing only the organ decoder must change the anomaly maps: the decoders are fused.
    torch.manual_seed(0)
    net = ExactNet(TINY).eval()
    x = torch.randn(1, 1, 8, 8, 8)
    before = net(x).anomaly_logits_full.detach().clone()
    with torch.no_grad():
        for p in net.organ_dec.parameters():
            p.add_(0.5)
    assert not torch.allclose(before, net(x).anomaly_logits_full)


@pytest.mark.parametrize("detach", [True, False])
def test_anomaly_loss_reaches_the_organ_decoder_only_without_detach(detach: bool) -> None:
    torch.manual_seed(0)
    net = ExactNet(NetworkConfig(channels=(4, 8, 16), detach_organ_features=detach))
    net(torch.randn(1, 1, 8, 8, 8)).anomaly_logits_full.sum().backward()
    organ_grad = sum(float(p.grad.abs().sum()) for p in net.organ_dec.parameters() if p.grad is not None)
    assert (organ_grad == 0.0) is detach
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())


def test_topk_mean_matches_numpy_sort() -> None:
    rng = np.random.default_rng(0)
    v = rng.random((2, 3, 4, 5, 6)).astype(np.float32)
    got = topk_mean(torch.from_numpy(v), 7).numpy()
    want = np.sort(v.reshape(2, 3, -1), axis=-1)[..., ::-1][..., :7].mean(-1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # k larger than the volume is clamped to all voxels
    np.testing.assert_allclose(
        topk_mean(torch.from_numpy(v), 10_000).numpy(), v.reshape(2, 3, -1).mean(-1), rtol=1e-5
    )


#: Confinement regions without their margins: the organ ids alone.
NO_MARGIN = {n: 0.0 for n in ABNORMALITIES}


def test_pooling_confines_map_to_region() -> None:
    organs = one_hot(two_lung_organs())
    pool = OrganConfinedMILPool(margins_mm=NO_MARGIN)
    outside = torch.zeros(1, len(ABNORMALITIES), 8, 8, 8)
    outside[:, :, 3:5] = 0.95  # high only in the body between the lungs
    inside = torch.zeros_like(outside)
    inside[:, :, 0, 0, 0:2] = 0.95  # high on two voxels of the left lung
    p_out, p_in = pool(outside, organs, 2)[0, NODULE], pool(inside, organs, 2)[0, NODULE]
    assert p_out < 0.01
    assert p_in == pytest.approx(0.95)
    # Medical material's region is the whole body: the outside map counts there
    assert pool(outside, organs, 2)[0, abnormality_index("Medical material")] == pytest.approx(0.95)


def test_confinement_margin_holds_a_lesion_the_masks_call_another_organ() -> None:
    """A consolidation the intensity masks label pleura or body beside the lung: inside its region with
    the margin, outside without it; the margin never leaves the body and scales with the grid spacing."""
    labels = np.full((12, 8, 8), ORGAN_IDS["body"], np.uint8)
    labels[:4] = ORGAN_IDS["lung_left"]
    labels[4] = ORGAN_IDS["pleura"]  # the consolidated, non-aerated lung: not "lung" to the masks
    labels[10:] = 0  # outside the body
    organs = one_hot(labels)
    maps = torch.zeros(1, len(ABNORMALITIES), 12, 8, 8)
    maps[:, :, 5, 4, 4] = 0.9  # 6 mm beyond the pleura voxel, 12 mm from the aerated lung
    cons = abnormality_index("Consolidation")
    pool = OrganConfinedMILPool(spacing_mm=(6.0, 6.0, 6.0))
    assert pool(maps, organs, 1)[0, cons] == pytest.approx(0.9)
    assert OrganConfinedMILPool(spacing_mm=(6.0,) * 3, margins_mm=NO_MARGIN)(maps, organs, 1)[0, cons] == 0.0
    # on a 2 mm grid the same 12 mm margin reaches 6 voxels: the same voxel count is now 3 voxels away
    assert OrganConfinedMILPool(spacing_mm=(2.0,) * 3)(maps, organs, 1)[0, cons] == pytest.approx(0.9)
    far = torch.zeros_like(maps)
    far[:, :, 8, 4, 4] = 0.9  # 24 mm from the cavity at 6 mm spacing: outside the 12 mm margin
    assert pool(far, organs, 1)[0, cons] == 0.0
    outside = torch.zeros_like(maps)
    outside[:, :, 10, 4, 4] = 0.9  # dilation reaches x=10 at 2 mm spacing, but it is outside the body
    assert OrganConfinedMILPool(spacing_mm=(2.0,) * 3)(outside, organs, 1)[0, cons] == 0.0
    # the numpy view (evaluation, grounded reports) is the same region
    masks = region_masks(labels, (6.0, 6.0, 6.0))
    assert masks[cons, 5, 4, 4] and not masks[cons, 8, 4, 4] and not masks[cons, 10, 4, 4]


def test_pooling_without_confinement_is_the_ablation() -> None:
    organs = one_hot(two_lung_organs())
    outside = torch.zeros(1, len(ABNORMALITIES), 8, 8, 8)
    outside[:, :, 3:5] = 0.95
    assert OrganConfinedMILPool(confine=False)(outside, organs, 2)[0, NODULE] == pytest.approx(0.95)
    assert region_matrix(confine=False).min() == 1.0


def test_pooling_small_region_not_diluted_and_empty_region_is_zero() -> None:
    labels = np.full((8, 8, 8), ORGAN_IDS["body"], np.uint8)
    labels[0, 0, :2] = ORGAN_IDS["aorta"]  # an aorta of 2 voxels, fewer than k
    maps = torch.full((1, len(ABNORMALITIES), 8, 8, 8), 0.9, requires_grad=True)
    pooled = OrganConfinedMILPool()(maps, one_hot(labels), 48)
    assert pooled[0, abnormality_index("Arterial wall calcification")].item() == pytest.approx(0.9)
    # no lungs at all: the lung findings pool to exactly 0, with finite gradients
    assert pooled[0, NODULE].item() == 0.0
    pooled.sum().backward()
    assert torch.isfinite(maps.grad).all()


def test_pooling_resamples_fine_organs_to_half_scale_maps() -> None:
    organs = one_hot(two_lung_organs((8, 8, 8)))
    maps = torch.zeros(1, len(ABNORMALITIES), 4, 4, 4)
    maps[:, :, 0] = 0.8  # x 0..1 at full scale: the left lung
    assert OrganConfinedMILPool()(maps, organs, 3)[0, NODULE] == pytest.approx(0.8, rel=1e-5)


def test_soft_regions_from_predicted_probabilities() -> None:
    organ_probs = torch.full((1, NUM_ORGAN_CLASSES, 4, 4, 4), 0.0)
    organ_probs[:, ORGAN_IDS["lung_left"]] = 0.5
    organ_probs[:, ORGAN_IDS["body"]] = 0.5
    maps = torch.full((1, len(ABNORMALITIES), 4, 4, 4), 0.8)
    # region weight 0.5 everywhere: confined probability is half the map's
    assert OrganConfinedMILPool()(maps, organ_probs, 3)[0, NODULE] == pytest.approx(0.4)


def test_uncertain_labels_masked_do_not_change_the_loss() -> None:
    labels = torch.tensor([[1.0, 0.0] + [0.0] * 16])
    uncertain = torch.tensor([[0.0, 1.0] + [0.0] * 16])
    pw = torch.ones(18)
    probs_a = torch.full((1, 18), 0.1)
    probs_b = probs_a.clone()
    probs_b[0, 1] = 0.99  # only the uncertain entry differs
    t, m = apply_uncertain_policy(labels, uncertain, "mask")
    assert weighted_bce(probs_a, t, m, pw) == pytest.approx(weighted_bce(probs_b, t, m, pw).item())
    t, m = apply_uncertain_policy(labels, uncertain, "label")
    assert weighted_bce(probs_b, t, m, pw) > weighted_bce(probs_a, t, m, pw)
    t, m = apply_uncertain_policy(labels, uncertain, "soft", 0.5)
    assert t[0, 1] == 0.5 and m.min() == 1.0


def test_positive_weight_raises_the_cost_of_missing_rare_findings() -> None:
    labels = np.zeros((10, 18))
    labels[:2, 0] = 1  # 2 positives, 8 negatives
    w = pos_weight_from_labels(labels, np.ones_like(labels, bool))
    assert w[0] == pytest.approx(4.0)
    assert w[1] == 1.0  # no positive at all: neutral weight, not infinity
    t = torch.zeros(1, 18)
    t[0, 0] = 1
    miss = torch.full((1, 18), 0.2)
    lw = weighted_bce(miss, t, torch.ones(1, 18), torch.from_numpy(w).float())
    l1 = weighted_bce(miss, t, torch.ones(1, 18), torch.ones(18))
    assert lw > l1


def test_schedules_decay() -> None:
    cfg = LossConfig(organ_weight_start=1.0, organ_weight_end=0.2, organ_weight_epochs=4)
    assert [organ_loss_weight(cfg, e) for e in (0, 2, 4, 9)] == pytest.approx([1.0, 0.6, 0.2, 0.2])
    assert [pseudo_mask_probability(1.0, 4, e) for e in (0, 2, 4, 6)] == pytest.approx([1.0, 0.5, 0.0, 0.0])


def test_package_round_trip_and_infer_volume(tmp_path) -> None:
    from exact_ct.dataset.grid import GridPlan
    from exact_ct.model.inference import infer_volume
    from exact_ct.model.package import ModelPackage, load_package, save_package
    from tests.support.toy import toy_study

    torch.manual_seed(0)
    plan = GridPlan(spacing_xyz_mm=(10.0, 10.0, 10.0), size_xyz=(16, 16, 8))
    pkg = ModelPackage(
        net=ExactNet(TINY),
        network=TINY,
        pooling=PoolingConfig(k_test=3),
        plan=plan,
        thresholds={"Lung nodule": 0.3},
    )
    save_package(pkg, tmp_path / "m")
    loaded = load_package(tmp_path / "m")
    assert loaded.plan == plan and loaded.thresholds == {"Lung nodule": 0.3}
    for k, v in pkg.net.state_dict().items():
        assert torch.equal(v, loaded.net.state_dict()[k])
    hu, aff, _, _ = toy_study(np.random.default_rng(0), (30, 24, 12), 6.0, set())
    probs, organs, maps = infer_volume(hu, aff, loaded)
    assert list(probs) == list(ABNORMALITIES) and all(0.0 <= p <= 1.0 for p in probs.values())
    assert organs.shape == hu.shape and organs.dtype == np.uint8
    assert maps.shape == (*hu.shape, len(ABNORMALITIES)) and maps.dtype == np.float32
    # the 160 mm grid covers the 180 mm body's centre only: outside it maps are exactly 0
    assert maps[0].max() == 0.0 and maps[15].max() > 0.0


def test_pooling_on_logits_confines_and_gives_negative_bags_a_gradient() -> None:
    organs = one_hot(two_lung_organs())
    pool = OrganConfinedMILPool(on_logits=True, margins_mm=NO_MARGIN)
    logits = torch.full((1, len(ABNORMALITIES), 8, 8, 8), -4.0)
    logits[:, :, 3:5] = 3.0  # high only in the body between the lungs
    p = pool(logits, organs, 2)[0]
    assert p[NODULE] == pytest.approx(torch.sigmoid(torch.tensor(-4.0)).item(), rel=1e-4)
    assert p[abnormality_index("Medical material")] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    # a negative bag: the BCE gradient on a pooled logit is p (here sigmoid(-4) = 0.018), on its top voxel
    start = torch.full((1, len(ABNORMALITIES), 8, 8, 8), -4.0, requires_grad=True)
    (-torch.log1p(-pool(start, organs, 1)[0, NODULE])).backward()
    assert start.grad is not None and start.grad.abs().max() == pytest.approx(0.018, abs=2e-3)
    assert pool.pool_input(torch.zeros(1)).item() == 0.0
    assert OrganConfinedMILPool().pool_input(torch.zeros(1)).item() == 0.5


def test_deep_supervision_heads_give_coarser_organ_logits_and_train() -> None:
    torch.manual_seed(0)
    net = ExactNet(NetworkConfig(channels=(4, 8, 16), organ_deep_supervision=1))
    out = net(torch.randn(1, 1, 16, 16, 8))
    assert [tuple(t.shape) for t in out.organ_logits_deep] == [(1, NUM_ORGAN_CLASSES, 8, 8, 4)]
    assert ExactNet(TINY)(torch.randn(1, 1, 8, 8, 8)).organ_logits_deep == ()
    labels = torch.from_numpy(two_lung_organs((16, 16, 8)).astype(np.int64))[None, None]
    loss = OrganLoss()(out.organ_logits, labels, out.organ_logits_deep)
    loss.backward()
    assert net.organ_heads_deep[0].conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="organ_deep_supervision"):
        NetworkConfig(channels=(4, 8, 16), organ_deep_supervision=2)


def test_organ_loss_deep_terms_are_weighted_means_of_each_scale() -> None:
    # Perfect full-resolution logits and uninformative coarse ones: the deep term (weight 1/2, then all
    # weights normalised) raises the loss; a perfect coarse head brings it back to about the
    # full-resolution loss alone.
    labels = torch.from_numpy(two_lung_organs((8, 8, 8)).astype(np.int64))[None, None]
    perfect = 20.0 * one_hot(labels[0, 0].numpy())
    small = torch.nn.functional.interpolate(labels.float(), size=(4, 4, 4), mode="nearest-exact").long()
    perfect_small = 20.0 * one_hot(small[0, 0].numpy())
    loss = OrganLoss()
    alone = float(loss(perfect, labels))
    with_bad = float(loss(perfect, labels, (torch.zeros(1, NUM_ORGAN_CLASSES, 4, 4, 4),)))
    with_good = float(loss(perfect, labels, (perfect_small,)))
    assert with_bad > alone + 0.1
    assert with_bad > with_good + 0.1
    assert with_good == pytest.approx(alone, abs=0.03)
