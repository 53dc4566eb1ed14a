"""The pseudo_masks stage on a tiny fake ingest folder: masks for good studies, quarantine for bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from exact_ct.io import load_canonical, save_nifti

TS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ct" / "totalseg"


def test_stage_writes_masks_qc_and_quarantine(tmp_path: Path) -> None:
    from exact_ct.synth import render_study
    from stages.pseudo_masks import main

    ingest = tmp_path / "ingest" / "b1"
    study = render_study(0, seed=7)
    save_nifti(study.hu, study.affine, ingest / "volumes" / "s-aaaa.nii.gz")
    # The real lung-base crop has a left lung below the plausible minimum volume: QC must quarantine it.
    hu, affine = load_canonical(TS / "example_ct_sm.nii.gz")
    save_nifti(hu, affine, ingest / "volumes" / "s-bbbb.nii.gz")
    pd.DataFrame(
        {
            "study_id": ["s-aaaa", "s-bbbb"],
            "patient_id": ["p-1", "p-2"],
            "volume": ["volumes/s-aaaa.nii.gz", "volumes/s-bbbb.nii.gz"],
        }
    ).to_csv(ingest / "manifest.csv", index=False)
    params = tmp_path / "params.yaml"
    params.write_text("pseudo_masks:\n  backend: intensity\n  workers: 1\n")
    out = tmp_path / "pseudo_masks" / "b1"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "s-stale.nii.gz").write_bytes(b"old")
    summary = tmp_path / "reports" / "b1.json"

    rc = main(
        [
            "--params",
            str(params),
            "--batch",
            "b1",
            "--in",
            str(ingest),
            "--out",
            str(out),
            "--summary",
            str(summary),
        ]
    )

    assert rc == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["s-aaaa.nii.gz"]
    mask, mask_affine = load_canonical(out / "masks" / "s-aaaa.nii.gz")
    assert mask.shape == study.hu.shape and mask.dtype == np.uint8 and np.allclose(mask_affine, study.affine)
    assert {1, 2, 9} <= set(np.unique(mask))
    qc = pd.read_csv(out / "qc.csv")
    assert list(qc["study_id"]) == ["s-aaaa", "s-bbbb"] and list(qc["passed"]) == [True, False]
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert list(quarantine["study_id"]) == ["s-bbbb"]
    assert quarantine["rule"].iloc[0] == "volume_range" and "lung_left" in quarantine["message"].iloc[0]
    counts = json.loads(summary.read_text())
    assert counts == {
        "batch": "b1",
        "backend": "intensity",
        "studies": 2,
        "masks": 1,
        "quarantined": 1,
        "quarantine_rules": {"volume_range": 1},
    }
