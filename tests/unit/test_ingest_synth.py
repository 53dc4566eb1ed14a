"""A small synthetic drop from `exact synth` ingests with zero quarantines onto the truth grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from exact_ct.cli import main as exact_main
from exact_ct.ingest import IngestConfig, ingest_drop
from exact_ct.privacy import study_pseudonym


def test_synthetic_drop_ingests_cleanly_onto_the_truth_grid(tmp_path: Path) -> None:
    assert (
        exact_main(
            ["synth", "--studies", "2", "--out", str(tmp_path / "syn"), "--seed", "3", "--no-progress"]
        )
        == 0
    )
    out = tmp_path / "out"
    summary = ingest_drop(tmp_path / "syn" / "drop", out, IngestConfig(workers=1), progress=False)
    assert summary["files_quarantined"] == {} and summary["studies_quarantined"] == {}
    assert summary["studies_used"] == 2 and summary["passed"]
    manifest = pd.read_csv(out / "manifest.csv")
    truths = sorted((tmp_path / "syn" / "truth" / "organs").glob("*.nii.gz"))
    assert len(truths) == 2
    for truth in truths:
        accession = truth.name.removesuffix(".nii.gz")
        study_id = study_pseudonym(accession)
        assert study_id in set(manifest["study_id"])
        vol, ref = nib.load(out / "volumes" / f"{study_id}.nii.gz"), nib.load(truth)
        assert vol.shape == ref.shape
        np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-3)
