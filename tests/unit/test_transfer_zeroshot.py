"""Zero-shot segmentation from anomaly maps (top-k % and absolute), `exact infer --zero-shot-seg`, and the
`finetune@<task>` stage."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from exact_ct.cli import main
from exact_ct.dataset.grid import GridPlan
from exact_ct.io import save_nifti
from exact_ct.model.config import NetworkConfig, PoolingConfig
from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage, save_package
from exact_ct.schema import ABNORMALITIES, ORGAN_IDS, abnormality_index
from exact_ct.transfer.zeroshot import Threshold, parse_names, zero_shot_mask
from tests.support.toy import toy_study

OPACITY, CONSOLIDATION = abnormality_index("Lung opacity"), abnormality_index("Consolidation")


def _maps(shape: tuple[int, int, int] = (10, 8, 6)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    maps = rng.random((*shape, len(ABNORMALITIES))).astype(np.float32) * 0.1
    organs = np.full(shape, ORGAN_IDS["body"], np.uint8)
    organs[:5] = ORGAN_IDS["lung_right"]
    return maps, organs


def test_absolute_threshold_keeps_voxels_where_the_mean_of_the_named_maps_reaches_it() -> None:
    maps, _ = _maps()
    maps[2, 3, 1, OPACITY], maps[2, 3, 1, CONSOLIDATION] = 0.9, 0.5  # mean 0.7
    maps[4, 4, 4, OPACITY], maps[4, 4, 4, CONSOLIDATION] = 0.9, 0.1  # mean 0.5: below 0.6
    mask = zero_shot_mask(maps, ["Lung opacity", "Consolidation"], Threshold.parse("0.6"))
    assert mask.dtype == np.uint8 and mask.shape == maps.shape[:3]
    assert np.argwhere(mask).tolist() == [[2, 3, 1]]


def test_top_k_percent_keeps_exactly_that_share_of_the_findings_organ_region() -> None:
    maps, organs = _maps()
    maps[8, 0, 0, OPACITY] = 1.0  # outside the lungs: must not be chosen even though it is the maximum
    mask = zero_shot_mask(maps, ["Lung opacity"], Threshold.parse("10%"), organs)
    lung = organs == ORGAN_IDS["lung_right"]
    assert mask.sum() == int(np.ceil(0.10 * lung.sum())) and not mask[~lung].any()
    kept = maps[..., OPACITY][mask.astype(bool)]
    assert kept.min() >= maps[..., OPACITY][lung & ~mask.astype(bool)].max()  # the highest ones
    # without organs the whole volume is the region
    assert zero_shot_mask(maps, ["Lung opacity"], Threshold.parse("10%")).sum() == int(
        np.ceil(0.1 * lung.size)
    )


@pytest.mark.parametrize("bad", ["0%", "150%", "1.5", "-0.1", "lots"])
def test_bad_thresholds_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="zero-shot threshold"):
        Threshold.parse(bad)


def test_names_are_checked_against_the_schema() -> None:
    assert parse_names(" Lung opacity,Consolidation ,Lung opacity") == ["Lung opacity", "Consolidation"]
    with pytest.raises(ValueError, match="unknown abnormality"):
        parse_names("Lung opacty")


def _package(folder: Path, size: tuple[int, int, int] = (40, 32, 24)) -> Path:
    torch.manual_seed(0)
    net = NetworkConfig(channels=(4, 8))
    return save_package(ModelPackage(ExactNet(net), net, PoolingConfig(), GridPlan((8.0,) * 3, size)), folder)


def test_infer_writes_the_zero_shot_mask_on_the_study_grid(tmp_path: Path) -> None:
    hu, aff, _, _ = toy_study(np.random.default_rng(1), (40, 32, 24), 8.0, {"Lung nodule"})
    study = tmp_path / "study.nii.gz"
    save_nifti(hu, aff, study)
    out = tmp_path / "out"
    rc = main(
        ["infer", str(study), "--model", str(_package(tmp_path / "m")), "--out", str(out),
         "--params", str(tmp_path / "none.yaml"), "--no-pseudo-masks",
         "--zero-shot-seg", "Lung opacity,Consolidation", "--zero-shot-threshold", "5%"]
    )  # fmt: skip
    assert rc == 0
    img = nib.load(str(out / "zero_shot_seg.nii.gz"))
    mask = np.asanyarray(img.dataobj)
    assert mask.shape == hu.shape and mask.dtype == np.uint8
    np.testing.assert_allclose(img.affine, aff, atol=1e-4)
    organs = np.asanyarray(nib.load(str(out / "organs.nii.gz")).dataobj)
    lungs = np.isin(organs, [1, 2])
    summary = json.loads((out / "zero_shot_seg.json").read_text())
    assert summary["threshold"] == {"mode": "topk", "value": 5.0} and summary["voxels"] == int(mask.sum())
    if lungs.any():  # the random model's organs: the mask is 5 % of its predicted lungs
        assert mask.sum() == int(np.ceil(0.05 * lungs.sum())) and not mask[~lungs].any()


def test_infer_rejects_a_misspelt_zero_shot_name_before_running(tmp_path: Path, capsys) -> None:
    rc = main(
        ["infer", str(tmp_path / "missing.nii.gz"), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o"),
         "--zero-shot-seg", "Lung opacty"]
    )  # fmt: skip
    assert rc == 2 and "unknown abnormality" in capsys.readouterr().err


def test_finetune_stage_runs_a_task_from_params(tmp_path: Path) -> None:
    from stages.finetune import main as stage_main

    data = tmp_path / "seg"
    for i in range(3):
        hu, aff, _, lesions = toy_study(np.random.default_rng(50 + i), (40, 32, 24), 8.0, {"Lung nodule"})
        save_nifti(hu, aff, data / "images" / f"c{i}.nii.gz")
        save_nifti(lesions["Lung nodule"], aff, data / "labels" / f"c{i}.nii.gz", dtype=np.uint8)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "finetune": {
                    "defaults": {"epochs": 1, "seed": 3, "val_fraction": 0.34},
                    "tasks": {"nodule_seg": {"kind": "segmentation", "overrides": {"freeze_encoder": True}}},
                }
            }
        )
    )
    out, metrics = tmp_path / "models" / "nodule_seg", tmp_path / "reports" / "nodule_seg.json"
    rc = stage_main(
        ["--params", str(params), "--name", "nodule_seg", "--model", str(_package(tmp_path / "m")),
         "--data", str(data), "--out", str(out), "--metrics", str(metrics)]
    )  # fmt: skip
    assert rc == 0
    m = json.loads(metrics.read_text())
    assert (
        m["name"] == "nodule_seg"
        and m["task"] == "segmentation"
        and m["freeze_encoder"] is True
        and m["val_studies"] == 1
    )
    manifest = json.loads((out / "package.json").read_text())
    assert (
        manifest["config"]["epochs"] == 1 and manifest["params"]["finetune"]["task"]["kind"] == "segmentation"
    )


@pytest.mark.slow  # builds a toy build_dataset folder first (~15-25 s on 2 shared cores)
def test_finetune_stage_on_a_build_dataset_folder_uses_its_truth_masks_and_labels(tmp_path: Path) -> None:
    from exact_ct.config import from_dict
    from exact_ct.dataset.build import build_dataset, load_plan
    from exact_ct.dataset.config import BuildDatasetConfig
    from stages.finetune import main as stage_main
    from tests.support.toy import make_toy_interim

    make_toy_interim(
        tmp_path, "b1", 8, seed=1, shape=(20, 16, 12), spacing=10.0, with_truth=True, prevalence=0.5
    )
    grid = {"spacing_xyz_mm": [12.0, 12.0, 12.0], "size_xyz": [16, 16, 8]}
    cfg = from_dict(BuildDatasetConfig, {"workers": 1, "profiles": {"cpu-demo": grid}}, "build_dataset")
    ds = tmp_path / "ds"
    build_dataset(cfg, ["b1"], tmp_path / "interim", ds, tmp_path / "rep", tmp_path / "synth")
    torch.manual_seed(0)
    net = NetworkConfig(channels=(4, 8))
    model = save_package(ModelPackage(ExactNet(net), net, PoolingConfig(), load_plan(ds)), tmp_path / "m")
    params = tmp_path / "params.yaml"
    tasks = {
        "nod_seg": {"kind": "segmentation", "target": "Lung nodule", "max_studies": 4},
        "nod_cls": {"kind": "classify", "target": "Lung nodule", "overrides": {"region": [1, 2]}},
    }
    params.write_text(
        yaml.safe_dump({"finetune": {"defaults": {"epochs": 1, "val_fraction": 0.25}, "tasks": tasks}})
    )
    for task in tasks:
        rc = stage_main(
            ["--params", str(params), "--name", task, "--model", str(model), "--data", str(ds),
             "--out", str(tmp_path / task), "--metrics", str(tmp_path / f"{task}.json")]
        )  # fmt: skip
        assert rc == 0
    seg, cls = (json.loads((tmp_path / f"{t}.json").read_text()) for t in tasks)
    assert seg["train_studies"] + seg["val_studies"] == 4 and seg["target"] == "Lung nodule"
    assert cls["train_studies"] + cls["val_studies"] == 8  # every study has a truth label
