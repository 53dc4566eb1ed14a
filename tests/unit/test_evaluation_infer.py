"""`exact infer` on a tiny NIfTI with a tiny randomly initialised package."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from exact_ct.cli import main
from exact_ct.dataset.grid import GridPlan
from exact_ct.io import save_nifti
from exact_ct.model.config import NetworkConfig, PoolingConfig
from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage, save_package
from exact_ct.schema import ABNORMALITIES
from tests.support.toy import toy_study


def _package(folder: Path) -> Path:
    torch.manual_seed(0)
    net = NetworkConfig(channels=(4, 8))
    thresholds = dict.fromkeys(
        ABNORMALITIES, 0.0
    )  # every finding "positive": exercises the grounded sentences
    pkg = ModelPackage(
        ExactNet(net), net, PoolingConfig(), GridPlan((8.0, 8.0, 8.0), (24, 24, 16)), thresholds=thresholds
    )
    return save_package(pkg, folder)


def test_infer_on_a_nifti_writes_every_output_on_the_study_grid(tmp_path: Path) -> None:
    hu, aff, _, _ = toy_study(np.random.default_rng(0), (40, 32, 24), 8.0, {"Lung nodule"})
    # store it LPS-oriented: the outputs must come back on the canonical RAS+ grid of the study
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = (hu.shape[0] - 1, hu.shape[1] - 1)
    lps = aff @ flip  # voxel i of the flipped array is voxel n-1-i of the original
    study = tmp_path / "in" / "study.nii.gz"
    save_nifti(hu[::-1, ::-1, :], lps, study)
    before = study.read_bytes()
    out = tmp_path / "out"
    params = tmp_path / "missing.yaml"
    rc = main(
        [
            "infer",
            str(study),
            "--model",
            str(_package(tmp_path / "model")),
            "--out",
            str(out),
            "--params",
            str(params),
        ]
    )
    assert rc == 0
    assert study.read_bytes() == before  # input untouched
    assert {p.name for p in out.iterdir()} == {
        "probabilities.json",
        "organs.nii.gz",
        "anomaly_maps.nii.gz",
        "report.md",
        "overlay.png",
        "organs.ctbl",
        "organs_itksnap.txt",
    }
    maps = nib.load(str(out / "anomaly_maps.nii.gz"))
    organs = nib.load(str(out / "organs.nii.gz"))
    assert maps.shape == (40, 32, 24, 18) and organs.shape == (40, 32, 24)
    np.testing.assert_allclose(maps.affine, aff, atol=1e-4)  # canonical RAS+ grid of the input
    probs = json.loads((out / "probabilities.json").read_text())
    assert set(probs["probabilities"]) == set(ABNORMALITIES)  # keys sorted; channel order below
    assert probs["anomaly_maps"]["channels"] == list(ABNORMALITIES)
    assert len(probs["positive"]) == 18 and "organ_dice_vs_pseudo_masks" in probs["qc"]
    report = (out / "report.md").read_text()
    assert report.count("axial slice") == 18  # one grounded sentence per positive finding


def test_infer_rejects_a_study_that_fails_ingest_qc(tmp_path: Path, capsys) -> None:
    study = tmp_path / "flat.nii.gz"
    save_nifti(np.full((20, 20, 4), 40, np.int16), np.eye(4), study)  # 4 slices, no air: not a chest CT
    rc = main(
        [
            "infer",
            str(study),
            "--model",
            str(_package(tmp_path / "model")),
            "--out",
            str(tmp_path / "out"),
            "--params",
            str(tmp_path / "none.yaml"),
        ]
    )
    assert rc == 1
    assert "rejected by ingest QC" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_infer_outputs_are_byte_identical_across_runs_and_steps_are_timed(tmp_path: Path) -> None:
    from exact_ct.evaluation.infer import run_infer

    hu, aff, _, _ = toy_study(np.random.default_rng(2), (36, 30, 20), 7.0, {"Pleural effusion"})
    study = tmp_path / "study.nii.gz"
    save_nifti(hu, aff, study)
    model = _package(tmp_path / "model")
    first = run_infer(study, model, tmp_path / "a")
    second = run_infer(study, model, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(names) == 7
    for name in names:  # no timestamps or timings leak into the files
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for res in (first, second):
        assert {"ingest", "pseudo_masks", "network", "to_canonical", "write"} <= set(res.timings)
        assert all(v >= 0 for v in res.timings.values())
        assert sum(res.timings.values()) <= res.seconds + 1e-6
    maps = np.asanyarray(nib.load(str(tmp_path / "a" / "anomaly_maps.nii.gz")).dataobj)
    assert maps.shape == (36, 30, 20, 18) and maps.dtype == np.float32 and 0 < maps.max() <= 1
