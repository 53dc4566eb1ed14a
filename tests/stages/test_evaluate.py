"""Stages evaluate -> publish on a tiny toy dataset with a randomly initialised model package."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from exact_ct.config import from_dict
from exact_ct.dataset.build import build_dataset, load_plan
from exact_ct.dataset.config import BuildDatasetConfig
from exact_ct.evaluation.metrics import choose_thresholds
from exact_ct.evaluation.pipeline import reference
from exact_ct.model.config import NetworkConfig, PoolingConfig
from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage, save_package
from exact_ct.schema import ABNORMALITIES
from tests.support.toy import make_toy_interim


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    make_toy_interim(root, "b1", 12, seed=1, with_truth=True)
    cfg = from_dict(
        BuildDatasetConfig,
        {
            "profiles": {"cpu-demo": {"spacing_xyz_mm": [8.0, 8.0, 8.0], "size_xyz": [24, 24, 16]}},
            "workers": 1,
            "split": {"train": 0.34, "val": 0.33, "test": 0.33},
        },
    )
    build_dataset(cfg, ["b1"], root / "interim", root / "ds", root / "rep", root / "synth")
    torch.manual_seed(0)
    net = NetworkConfig(channels=(4, 8))
    save_package(
        ModelPackage(
            ExactNet(net), net, PoolingConfig(), load_plan(root / "ds"), version="0.1.0", data_version="toy"
        ),
        root / "model",
    )
    params = {
        "seed": 3,
        "evaluate": {"bootstrap": 100, "gallery_max": 2, "explain_max": 3, "threads": 1},
        # a random toy model is far below the quality floor: switch it off to exercise publishing
        "publish": {
            "max_macro_drop": 0.02,
            "max_label_drop": 0.05,
            "min_macro_auroc": 0.0,
            "min_test_studies": 0,
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return {
        "root": root,
        "ds": root / "ds",
        "model": root / "model",
        "params": root / "params.yaml",
        "interim": root / "interim",
    }


@pytest.mark.slow
def test_evaluate_then_publish(toy: dict[str, Path]) -> None:
    from stages import evaluate as stage_eval
    from stages import publish as stage_pub

    out = toy["root"] / "reports" / "evaluate"
    rc = stage_eval.main(
        [
            "--params",
            str(toy["params"]),
            "--dataset",
            str(toy["ds"]),
            "--model",
            str(toy["model"]),
            "--out",
            str(out),
            "--interim",
            str(toy["interim"]),
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    index = pd.read_csv(toy["ds"] / "index.csv", dtype={"study_id": str})
    test_ids = sorted(index.loc[index["split"] == "test", "study_id"])
    assert m["studies"] == {"val": int((index["split"] == "val").sum()), "test": len(test_ids)}
    assert m["label_source"] == "truth"  # every val/test study has synthetic truth

    # Thresholds are exactly those chosen on the validation predictions, never on test.
    pred = pd.read_csv(out / "predictions.csv", dtype={"study_id": str})
    val = pred[pred["split"] == "val"]
    val_rows = index.set_index("study_id").loc[val["study_id"]].reset_index()
    ref = reference(val_rows, "truth")
    expected = choose_thresholds(ref.y, val[list(ABNORMALITIES)].to_numpy(), ABNORMALITIES, ref.valid)
    assert m["thresholds"] == pytest.approx(expected, abs=1e-5)  # predictions.csv keeps 6 decimals

    macro = m["diagnosis"]["macro"]
    if macro["auroc_ci"] is not None:
        assert macro["auroc_ci"][0] <= macro["auroc"] <= macro["auroc_ci"][1]
    assert m["localization"]["overall"]["findings"] > 0  # toy lesions exist in the test split
    assert 0.0 <= m["organ_dice"]["truth"]["mean"] <= 1.0
    assert m["grounded_report"]["reports"] == len(test_ids)
    assert m["grounded_report"]["roundtrip_agreement"] == 1.0  # templates are read back as written

    # Explanations on the canonical grid of the ingest volume, capped by explain_max.
    studies = sorted(p.name for p in (out / "studies").iterdir())
    assert studies == test_ids[:3] or len(studies) == min(3, len(test_ids))
    sid = studies[0]
    row = index.set_index("study_id").loc[sid]
    vol = nib.as_closest_canonical(
        nib.load(str(toy["interim"] / "ingest" / row["batch"] / "volumes" / f"{sid}.nii.gz"))
    )
    maps = nib.load(str(out / "studies" / sid / "anomaly_maps.nii.gz"))
    organs = nib.load(str(out / "studies" / sid / "organs.nii.gz"))
    assert maps.shape == (*vol.shape, len(ABNORMALITIES)) and organs.shape == vol.shape
    np.testing.assert_allclose(maps.affine, vol.affine, atol=1e-4)
    assert (out / "studies" / sid / "montage.png").stat().st_size > 1000
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 3 + 2  # roc, pr, calibration + 2 gallery montages
    assert sorted(p.stem for p in (out / "plots" / "roc").glob("*.csv")) == sorted(
        n.lower().replace(" ", "_")
        for n in ABNORMALITIES
        if m["diagnosis"]["per_abnormality"][n]["auroc"] is not None
    )

    reg = toy["root"] / "models" / "registry"
    pub = toy["root"] / "reports" / "publish"
    args = [
        "--params",
        str(toy["params"]),
        "--candidate",
        str(toy["model"]),
        "--metrics",
        str(out / "metrics.json"),
        "--registry",
        str(reg),
        "--out",
        str(pub),
        "--dataset",
        str(toy["ds"]),
    ]
    assert stage_pub.main(args) == 0
    decision = json.loads((pub / "decision.json").read_text())
    assert decision["status"] == "first" and (reg / "0.1.0" / "model_card.md").is_file()
    assert stage_pub.main(args) == 0  # rerun: unchanged, no new version
    assert json.loads((pub / "decision.json").read_text())["status"] == "unchanged"
    assert sorted(p.name for p in reg.iterdir() if p.is_dir()) == ["0.1.0"]
