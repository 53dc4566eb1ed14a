"""The DVC stage `ingest@<batch>`: reads its params section, writes its outs and summary, fails loudly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from exact_ct.config import ConfigError
from stages.ingest import main
from tests.support.dicom_series import chest_phantom, write_series

REPO = Path(__file__).resolve().parents[2]


def make_drop(root: Path, n_good: int, n_bad: int) -> Path:
    drop = root / "raw" / "b1"
    rows = []
    for i in range(n_good + n_bad):
        hu = chest_phantom(16, 16, 12 if i < n_good else 3, seed=i)  # bad ones: too few slices
        write_series(drop / "dicom" / f"st{i}", hu, accession=f"A{i}", patient_id=f"P{i}")
        rows.append((f"A{i}", f"P{i}", "No effusion.", "Normal."))
    with open(drop / "reports.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["accession_number", "patient_id", "findings", "impression"])
        w.writerows(rows)
    (drop / "_COMPLETE").touch()
    return drop


def write_params(root: Path, **overrides: object) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"] = {**params["ingest"], "workers": 1, **overrides}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_writes_outs_and_summary_whose_counts_add_up(tmp_path: Path) -> None:
    drop = make_drop(tmp_path, n_good=3, n_bad=1)
    out, summary_path = tmp_path / "interim" / "ingest" / "b1", tmp_path / "reports" / "ingest" / "b1.json"
    argv = [
        "--params",
        str(write_params(tmp_path)),
        "--batch",
        "b1",
        "--in",
        str(drop),
        "--out",
        str(out),
        "--summary",
        str(summary_path),
    ]
    assert main(argv) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["batch"] == "b1" and summary["studies_used"] == 3
    assert summary["files_in"] == 3 * 12 + 3
    assert summary["files_in"] == summary["files_used"] + sum(summary["files_skipped"].values()) + sum(
        summary["files_quarantined"].values()
    )
    assert summary["files_quarantined"] == {"too_few_slices": 3}
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 3 and len(list((out / "volumes").glob("*.nii.gz"))) == 3
    assert {"study_id", "patient_id", "volume", "shape_xyz", "spacing_xyz_mm"} <= set(manifest.columns)
    assert (out / "quarantine.csv").exists() and (out / "reports.csv").exists()


def test_stage_fails_loudly_above_max_quarantine_share(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    drop = make_drop(tmp_path, n_good=1, n_bad=2)
    params = write_params(tmp_path, max_quarantine_share=0.5)
    argv = [
        "--params",
        str(params),
        "--batch",
        "b1",
        "--in",
        str(drop),
        "--out",
        str(tmp_path / "o"),
        "--summary",
        str(tmp_path / "s.json"),
    ]
    assert main(argv) == 1
    assert "exceeds max_quarantine_share" in capsys.readouterr().err
    assert json.loads((tmp_path / "s.json").read_text())["passed"] is False


def test_stage_rejects_unknown_params(tmp_path: Path) -> None:
    params = write_params(tmp_path, min_slicez=3)
    with pytest.raises(ConfigError, match="min_slicez"):
        main(
            [
                "--params",
                str(params),
                "--in",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--summary",
                str(tmp_path / "s.json"),
            ]
        )
