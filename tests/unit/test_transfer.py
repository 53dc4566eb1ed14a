"""Downstream transfer: `exact finetune` (segmentation, classify: fine-tune and probe), freezing, embed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from exact_ct.cli import main
from exact_ct.dataset.grid import GridPlan
from exact_ct.io import save_nifti
from exact_ct.model.config import NetworkConfig, PoolingConfig
from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage, load_package, save_package
from exact_ct.transfer.config import FinetuneConfig
from exact_ct.transfer.data import Sample, image_on_grid
from exact_ct.transfer.embed import embedding_dim, organ_embeddings
from exact_ct.transfer.model import build_net
from exact_ct.transfer.pipeline import load_finetuned, predict_study
from exact_ct.transfer.train import fit, prepare
from tests.support.toy import toy_study

NET = NetworkConfig(channels=(4, 8))
PLAN = GridPlan((8.0, 8.0, 8.0), (40, 32, 24))  # covers the whole toy study
SHAPE = (40, 32, 24)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    pkg = ModelPackage(ExactNet(NET), NET, PoolingConfig(), PLAN)
    return save_package(pkg, tmp_path_factory.mktemp("pkg") / "model")


def _study(seed: int, nodule: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hu, aff, _, lesions = toy_study(
        np.random.default_rng(seed), SHAPE, 8.0, {"Lung nodule"} if nodule else set()
    )
    return hu, aff, lesions.get("Lung nodule", np.zeros(SHAPE, np.uint8))


def _run(*argv: str, tmp: Path) -> int:
    return main([*argv, "--params", str(tmp / "no-params.yaml")])


def test_finetune_segmentation_writes_a_package_that_predicts_on_the_study_grid(
    package: Path, tmp_path: Path
) -> None:
    data = tmp_path / "seg"
    for i in range(4):
        hu, aff, mask = _study(i, nodule=True)
        save_nifti(hu, aff, data / "images" / f"case{i}.nii.gz")
        # the label on another grid (flipped LPS-like axes): it must be resampled, not copied
        flip = np.diag([-1.0, 1.0, 1.0, 1.0])
        flip[0, 3] = SHAPE[0] - 1
        save_nifti(mask[::-1], aff @ flip, data / "labels" / f"case{i}.nii.gz", dtype=np.uint8)
    save_nifti(_study(9, True)[0], np.diag([8.0, 8.0, 8.0, 1.0]), data / "images" / "orphan.nii.gz")
    out = tmp_path / "ft"
    rc = _run(
        "finetune", "--model", str(package), "--task", "segmentation", "--data", str(data),
        "--out", str(out), "--epochs", "2", "--seed", "1", tmp=tmp_path,
    )  # fmt: skip
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "segmentation" and metrics["train_studies"] + metrics["val_studies"] == 4
    assert metrics["dice"] is None or 0.0 <= metrics["dice"] <= 1.0
    q = pd.read_csv(out / "quarantine.csv")
    assert q["rule"].tolist() == ["missing_label"] and q["path"].str.endswith("orphan.nii.gz").all()
    assert (out / "weights.pt").is_file() and (out / "base" / "package.json").is_file()
    ft = load_finetuned(out)
    hu, aff, _ = _study(5, True)
    pred = predict_study(ft, hu, aff)
    assert pred["mask"].shape == SHAPE and pred["mask"].dtype == np.uint8
    assert set(np.unique(pred["mask"])) <= {0, 1}


def test_labels_on_another_grid_land_on_the_image_model_grid(tmp_path: Path) -> None:
    from exact_ct.transfer.data import load_segmentation_folder

    hu, aff, mask = _study(3, nodule=True)
    save_nifti(hu, aff, tmp_path / "images" / "a.nii.gz")
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = SHAPE[0] - 1
    save_nifti(mask[::-1], aff @ flip, tmp_path / "labels" / "a.nii.gz", dtype=np.uint8)
    save_nifti(mask, aff, tmp_path / "labels_same.nii.gz", dtype=np.uint8)
    got = load_segmentation_folder(tmp_path, PLAN).samples[0].mask
    # same result as the mask stored on the image's own grid, resampled directly
    from exact_ct.dataset.grid import mask_to_model_grid, to_model_grid

    _, g_aff = to_model_grid(hu, aff, PLAN)
    np.testing.assert_array_equal(got, mask_to_model_grid(mask, aff, g_aff, PLAN))
    assert got.sum() > 0


@pytest.mark.parametrize("method", ["finetune", "probe"])
def test_finetune_classify_from_a_labels_csv(package: Path, tmp_path: Path, method: str) -> None:
    vols = tmp_path / "vols"
    rows = []
    for i in range(6):
        hu, aff, _ = _study(10 + i, nodule=i % 2 == 0)
        save_nifti(hu, aff, vols / f"s-{i}.nii.gz")
        rows.append({"study_id": f"s-{i}", "large_nodule": i % 2})
    rows.append({"study_id": "s-9", "large_nodule": -1})  # hedged: not a binary label
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "cls"
    rc = _run(
        "finetune", "--model", str(package), "--task", "classify", "--labels", str(tmp_path / "labels.csv"),
        "--label-column", "large_nodule", "--data", str(vols), "--out", str(out), "--method", method,
        "--epochs", "2", "--seed", "0", tmp=tmp_path,
    )  # fmt: skip
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["train_studies"] + metrics["val_studies"] == 6
    assert {"auroc", "accuracy"} <= set(metrics)
    assert pd.read_csv(out / "quarantine.csv")["rule"].tolist() == ["no_binary_label"]
    assert ((out / "probe.json").is_file()) == (method == "probe")
    ft = load_finetuned(out)
    hu, aff, _ = _study(20, True)
    p = predict_study(ft, hu, aff)["probability"]
    assert 0.0 <= p <= 1.0


def _samples(n: int) -> list[Sample]:
    out = []
    for i in range(n):
        hu, aff, mask = _study(30 + i, nodule=True)
        image, g_aff = image_on_grid(hu, aff, PLAN)
        from exact_ct.dataset.grid import mask_to_model_grid

        out.append(Sample(f"s{i}", image, mask=mask_to_model_grid(mask, aff, g_aff, PLAN)))
    return out


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_encoder_keeps_encoder_weights_and_trains_the_rest(package: Path, freeze: bool) -> None:
    base = load_package(package)
    data = prepare(_samples(2), base)
    cfg = FinetuneConfig(freeze_encoder=freeze, epochs=2, batch_size=1, lr=0.01, seed=0)
    net, _ = fit("segmentation", data, np.arange(2), cfg, base, NET)
    before = base.net.state_dict()
    after = net.trunk.state_dict()
    enc = [k for k in after if k.startswith("encoder.")]
    dec = [k for k in after if k.startswith("anomaly_dec.") and after[k].dtype.is_floating_point]
    assert enc and dec
    assert all(torch.equal(after[k], before[k]) for k in enc) == freeze
    assert not all(torch.equal(after[k], before[k]) for k in dec)  # decoders learn either way


def test_scratch_init_does_not_copy_the_pretrained_weights(package: Path) -> None:
    base = load_package(package)
    data = prepare(_samples(1), base)
    cfg = FinetuneConfig(init="scratch", maps_input=False, epochs=1, seed=123)
    net, _ = fit("segmentation", data, np.arange(1), cfg, base, NET)
    assert net.n_extra == 0
    w = "encoder.0.conv.unit0.conv.weight"
    assert w in net.trunk.state_dict()
    assert not torch.allclose(net.trunk.state_dict()[w], base.net.state_dict()[w])


def test_embed_writes_one_vector_per_present_organ(package: Path, tmp_path: Path) -> None:
    hu, aff, _ = _study(40, nodule=False)
    study = tmp_path / "study.nii.gz"
    save_nifti(hu, aff, study)
    out = tmp_path / "emb.npz"
    assert _run("embed", str(study), "--model", str(package), "--out", str(out), tmp=tmp_path) == 0
    with np.load(out) as z:
        ids, vecs, names, voxels = z["organ_ids"], z["embeddings"], z["organ_names"], z["voxels"]
    pkg = load_package(package)
    assert vecs.shape == (len(ids), embedding_dim(pkg.net)) == (len(ids), 4 + 8 + 4)
    assert len(ids) >= 1 and set(ids.tolist()) <= set(range(1, 10)) and np.all(np.diff(ids) > 0)
    assert (voxels > 0).all() and len(names) == len(ids)
    # the first block is the mean of the first encoder level's features inside the predicted organ
    image, _ = image_on_grid(hu, aff, pkg.plan)
    emb = organ_embeddings(pkg, image)
    np.testing.assert_allclose(emb.vectors, vecs, rtol=1e-5, atol=1e-6)
    x = torch.from_numpy(image)[None]
    with torch.no_grad():
        f0 = pkg.net.encoder[0](x)[0].numpy()
        organs = pkg.net(x).organ_logits.argmax(1)[0].numpy()
    o = int(ids[0])
    np.testing.assert_allclose(vecs[0, :4], f0[:, organs == o].mean(1), rtol=1e-4, atol=1e-5)
    assert voxels[0] == int((organs == o).sum())


def test_subsample_prefers_lesions_for_segmentation_and_keeps_both_classes_for_classify() -> None:
    from exact_ct.transfer.data import subsample

    img = np.zeros((2, 2, 2), np.float32)
    seg = [Sample(f"s{i}", img, mask=np.full((2, 2, 2), int(i % 4 == 0), np.uint8)) for i in range(12)]
    got = subsample(seg, 4, seed=0)
    assert len(got) == 4 and sum(s.mask.any() for s in got) == 3  # all 3 with a lesion, then 1 without
    assert [s.study_id for s in got] == sorted((s.study_id for s in got), key=lambda x: int(x[1:]))
    cls = [Sample(f"s{i}", img, label=float(i < 2)) for i in range(20)]  # 10 % positive
    for seed in range(5):
        labels = [s.label for s in subsample(cls, 5, seed)]
        assert len(labels) == 5 and 1.0 in labels and 0.0 in labels
    assert subsample(cls, 0, 0) == cls and subsample(cls, 50, 0) == cls


def test_pretrained_parts_copy_only_the_named_parts(package: Path) -> None:
    base = load_package(package)
    data = prepare(_samples(1), base)
    cfg = FinetuneConfig(pretrained_parts=("encoder",), maps_input=False, epochs=1, lr=0.0, seed=7)
    net, _ = fit("segmentation", data, np.arange(1), cfg, base, NET)
    before, after = base.net.state_dict(), net.trunk.state_dict()
    floats = [k for k in after if after[k].dtype.is_floating_point and k in before]
    enc = [k for k in floats if k.startswith("encoder.")]
    # convolution kernels (norm and PReLU weights start at the same constants in every network)
    ano = [k for k in floats if k.startswith("anomaly_dec.") and after[k].dim() > 1]
    assert enc and ano
    assert all(torch.equal(after[k], before[k]) for k in enc)  # copied (lr 0: unchanged since)
    assert not any(torch.equal(after[k], before[k]) for k in ano)  # fresh initialisation


def test_head_warmup_leaves_the_trunk_untouched_and_trunk_lr_scale_zero_freezes_it(package: Path) -> None:
    base = load_package(package)
    data = prepare(_samples(2), base)
    before = base.net.state_dict()
    for cfg in (
        FinetuneConfig(head_warmup_epochs=2, epochs=2, batch_size=1, lr=0.01, seed=0),
        FinetuneConfig(trunk_lr_scale=0.0, epochs=2, batch_size=1, lr=0.01, seed=0),
    ):
        net, _ = fit("segmentation", data, np.arange(2), cfg, base, NET)
        after = net.trunk.state_dict()
        assert all(torch.equal(after[k], before[k]) for k in after if k in before)
        fresh = build_net(NET, base, pretrained=True, maps_input=True, seed=0).head.state_dict()
        assert not all(torch.equal(v, fresh[k]) for k, v in net.head.state_dict().items())  # head learnt
    # with one warm-up epoch of two, the trunk learns in the second
    cfg = FinetuneConfig(head_warmup_epochs=1, epochs=2, batch_size=1, lr=0.01, seed=0)
    net, _ = fit("segmentation", data, np.arange(2), cfg, base, NET)
    after = net.trunk.state_dict()
    assert not all(torch.equal(after[k], before[k]) for k in after if k.startswith("anomaly_dec."))


def test_encoder_lr_scale_zero_keeps_the_encoder_and_trains_the_decoders(package: Path) -> None:
    base = load_package(package)
    data = prepare(_samples(2), base)
    before = base.net.state_dict()
    cfg = FinetuneConfig(encoder_lr_scale=0.0, epochs=2, batch_size=1, lr=0.01, seed=0)
    net, _ = fit("segmentation", data, np.arange(2), cfg, base, NET)
    after = net.trunk.state_dict()
    enc = [k for k in after if k.startswith("encoder.") and k in before]
    dec = [k for k in after if k.startswith("anomaly_dec.") and after[k].dtype.is_floating_point]
    assert enc and dec
    assert all(torch.equal(after[k], before[k]) for k in enc)
    assert not all(torch.equal(after[k], before[k]) for k in dec)
    from exact_ct.config import ConfigError

    with pytest.raises(ConfigError):
        FinetuneConfig(encoder_lr_scale=-1.0)
