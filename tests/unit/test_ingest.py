"""Ingest on small synthetic DICOM drops: ordering, HU, series selection, QC rules, counts, outputs."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from exact_ct.ingest import RULES, IngestConfig, ingest_drop
from exact_ct.ingest.deid import Scrubber
from exact_ct.privacy import MissingKeyError, patient_pseudonym, study_pseudonym
from tests.support.dicom_series import chest_phantom, write_series

CFG = IngestConfig(workers=1)


def write_reports(drop: Path, rows: list[tuple[str, str, str, str]]) -> None:
    drop.mkdir(parents=True, exist_ok=True)
    with open(drop / "reports.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["accession_number", "patient_id", "findings", "impression"])
        w.writerows(rows)


def run(drop: Path, out: Path, cfg: IngestConfig = CFG) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    summary = ingest_drop(drop, out, cfg, progress=False)
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    return summary, manifest, quarantine


def _as_mpeg2(ds) -> None:
    """Label a file with a video transfer syntax that no installed decoder handles."""
    from pydicom.encaps import encapsulate

    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PixelData = encapsulate([ds.PixelData])


def assert_counts_add_up(summary: dict) -> None:
    assert summary["files_in"] == summary["files_used"] + sum(summary["files_skipped"].values()) + sum(
        summary["files_quarantined"].values()
    )


def test_volume_is_sorted_by_position_with_hu_and_ras_affine(tmp_path: Path) -> None:
    hu = chest_phantom(24, 20, 12, seed=1)
    drop = tmp_path / "drop"
    # Shuffled file names and backwards InstanceNumbers: only the positions give the right order.
    write_series(
        drop / "dicom" / "a", hu, pixel_spacing=(0.7, 0.9), slice_spacing=2.5, slope=0.5, intercept=-1024
    )
    write_reports(drop, [("ACC0001", "PID0001", "No effusion.", "Normal.")])
    summary, manifest, quarantine = run(drop, tmp_path / "out")
    assert summary["studies_used"] == 1 and len(quarantine) == 0
    assert_counts_add_up(summary)
    row = manifest.iloc[0]
    assert row["study_id"] == study_pseudonym("ACC0001") and row["patient_id"] == patient_pseudonym("PID0001")
    img = nib.load(tmp_path / "out" / row["volume"])
    assert img.get_data_dtype() == np.int16
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    data = np.asanyarray(img.dataobj)
    # DICOM (row i, col j, slice k) at LPS origin + j*0.9*x + i*0.7*y + k*2.5*z; RAS flips x and y.
    expected = hu[::-1, ::-1, :].transpose(1, 0, 2)
    np.testing.assert_array_equal(data, expected)  # slope 0.5: stored 2*(hu+1024), rescaled exactly
    np.testing.assert_allclose(
        img.affine[:3, :3], np.diag([0.9, 0.7, 2.5]), atol=1e-6
    )  # spacing along x = column spacing
    corner_lps = np.array([-100.0 + 19 * 0.9, -120.0 + 23 * 0.7, -50.0])
    np.testing.assert_allclose(img.affine[:3, 3], corner_lps * [-1, -1, 1], atol=1e-4)
    assert row["shape_xyz"] == "20x24x12" and row["source_orientation"] == "LPS"
    assert int(row["n_source_files"]) == 12 and len(row["source_sha256"]) == 64


def test_series_selection_prefers_thin_soft_kernel_and_skips_scouts(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    base = chest_phantom(16, 16, 30, seed=2)
    common = {"accession": "ACC7", "patient_id": "P7"}
    write_series(
        drop / "dicom" / "scout",
        chest_phantom(16, 16, 1),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        **common,
    )
    write_series(drop / "dicom" / "thick", base[:, :, :12], slice_spacing=5.0, kernel="B30f", **common)
    write_series(drop / "dicom" / "soft", base, slice_spacing=1.0, kernel="B31f", **common)
    write_series(drop / "dicom" / "lung", base[:, :, :20], slice_spacing=1.25, kernel="B70f", **common)
    write_reports(drop, [("ACC7", "P7", "x", "y")])
    summary, manifest, quarantine = run(drop, tmp_path / "out")
    assert len(quarantine) == 0 and summary["studies_used"] == 1
    assert manifest.iloc[0]["n_slices"] == "20"  # thin + lung kernel beats thin soft kernel with more slices
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert summary["files_skipped"] == {"localizer": 1, "not_selected": 12 + 30}
    assert set(skipped["reason"]) == {"localizer", "not_selected"}
    assert_counts_add_up(summary)


def test_failed_best_series_falls_back_to_next_candidate(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    hu = chest_phantom(16, 16, 14, seed=3)
    write_series(drop / "dicom" / "thin", hu, slice_spacing=1.0, accession="A1", patient_id="P1")
    (sorted((drop / "dicom" / "thin").iterdir())[0]).write_bytes(b"")  # an empty (truncated) file
    positions = [(0.0, 0.0, z) for z in [0, 1, 2, 3, 4, 5, 9, 10, 11, 12, 13, 14, 15, 16]]
    write_series(
        drop / "dicom" / "thin2",
        hu,
        positions=positions,
        slice_spacing=1.0,
        kernel="B31f",
        accession="A1",
        patient_id="P1",
    )
    write_series(drop / "dicom" / "thick", hu[:, :, :12], slice_spacing=5.0, accession="A1", patient_id="P1")
    write_reports(drop, [("A1", "P1", "x", "y")])
    summary, manifest, quarantine = run(drop, tmp_path / "out")
    assert summary["studies_used"] == 1 and manifest.iloc[0]["spacing_xyz_mm"].endswith("x5")
    rules = dict(zip(quarantine["path"].str.split("/").str[1], quarantine["rule"], strict=False))
    assert rules["thin2"] == "missing_slices" and "unreadable_file" in set(quarantine["rule"])
    assert_counts_add_up(summary)


def test_empty_and_shared_series_uids_are_split_by_folder_and_geometry(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    hu = chest_phantom(16, 16, 12, seed=4)
    # Two studies without any UID or accession, one per folder, same geometry.
    for name in ("x", "y"):
        write_series(drop / "dicom" / name, hu, study_uid="", series_uid="", accession="", patient_id="")
    # One UID shared by two geometries (16x16 and 12x12): must become two series, not one broken stack.
    write_series(drop / "dicom" / "z", hu, series_uid="1.2.3", accession="Z1")
    write_series(
        drop / "dicom" / "z",
        chest_phantom(12, 12, 12),
        series_uid="1.2.3",
        accession="Z1",
        names=[f"B{k}" for k in range(12)],
    )
    summary, manifest, quarantine = run(
        drop, tmp_path / "out", dataclasses.replace(CFG, require_report=False)
    )
    assert summary["studies_found"] == 3 and summary["studies_used"] == 3 and len(quarantine) == 0
    assert summary["files_skipped"] == {"not_selected": 12}
    assert manifest["qc_flags"].str.contains("no_report").all()


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"modality": "MR"}, "not_ct"),
        (
            {"positions": [(0.0, 0.0, z) for z in [0, 2, 4, 6, 8, 10, 12.5, 14, 16, 18, 20, 22]]},
            "nonuniform_spacing",
        ),
        (
            {"positions": [(0.0, 0.0, z) for z in [0, 2, 4, 6, 8, 10, 10, 14, 16, 18, 20, 22]]},
            "duplicate_positions",
        ),
        ({"iop": (1, 0, 0, 0, math.cos(0.35), math.sin(0.35))}, "oblique_or_tilted"),
        ({"positions": [(0.0, 0.2 * k, 2.0 * k) for k in range(12)]}, "oblique_or_tilted"),
        ({"intercept": 0.0}, "implausible_hu"),
        ({"body_part": "HEAD"}, "not_chest"),
        ({"edit": lambda ds, k: _as_mpeg2(ds)}, "unsupported_transfer_syntax"),
        ({"edit": lambda ds, k: delattr(ds, "PixelData")}, "missing_pixel_data"),
        ({"edit": lambda ds, k: delattr(ds, "ImagePositionPatient")}, "missing_geometry"),
    ],
)
def test_each_rule_quarantines_with_its_name(tmp_path: Path, kwargs: dict, rule: str) -> None:
    drop = tmp_path / "drop"
    hu = chest_phantom(16, 16, 12, seed=5)
    if kwargs.get("intercept") == 0.0:
        hu = (hu + 1024).astype(np.int16)  # data stored without its -1024 intercept: air reads as ~0 HU
    write_series(drop / "dicom" / "s", hu, accession="Q1", patient_id="PQ", **kwargs)
    write_reports(drop, [("Q1", "PQ", "x", "y")])
    summary, manifest, quarantine = run(drop, tmp_path / "out")
    assert len(manifest) == 0
    files = quarantine[~quarantine["path"].str.startswith("reports.csv")]
    assert set(files["rule"]) == {rule} and len(files) == 12
    assert quarantine["message"].str.len().min() > 10
    assert rule in RULES
    assert_counts_add_up(summary)
    assert not summary["passed"]  # 1 of 1 studies quarantined > 0.5


def test_small_oblique_plane_is_kept_exactly_in_the_affine(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    a = math.radians(4)
    iop = (1, 0, 0, 0, math.cos(a), math.sin(a))
    write_series(drop / "dicom" / "s", chest_phantom(16, 16, 12), iop=iop, accession="O1", patient_id="PO")
    write_reports(drop, [("O1", "PO", "x", "y")])
    summary, manifest, _ = run(drop, tmp_path / "out")
    assert summary["studies_used"] == 1 and "oblique_kept" in manifest.iloc[0]["qc_flags"]
    aff = nib.load(tmp_path / "out" / manifest.iloc[0]["volume"]).affine
    col_dir_ras = np.array([0, -math.cos(a), math.sin(a)])  # DICOM column direction, LPS -> RAS
    assert np.isclose(abs(aff[:3, 1] @ col_dir_ras) / np.linalg.norm(aff[:3, 1]), 1.0, atol=1e-6)


def test_report_rules_and_duplicate_accessions(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    hu = chest_phantom(16, 16, 12, seed=6)
    write_series(drop / "dicom" / "ok", hu, accession="R1", patient_id="P1")
    write_series(drop / "dicom" / "noreport", hu, accession="R2", patient_id="P2")
    write_series(drop / "dicom" / "dup1", hu, accession="R3", patient_id="P3", study_uid="1.2.3.1")
    write_series(drop / "dicom" / "dup2", hu, accession="R3", patient_id="P3", study_uid="1.2.3.2")
    write_series(drop / "dicom" / "duprep", hu, accession="R4", patient_id="P4")
    write_reports(
        drop,
        [
            ("R1", "P1", "a", "b"),
            ("R3", "P3", "c", "d"),
            ("R4", "P4", "e", "f"),
            ("R4", "P4", "g", "h"),
            ("R9", "P9", "i", "j"),
        ],
    )
    summary, manifest, quarantine = run(
        drop, tmp_path / "out", dataclasses.replace(CFG, max_quarantine_share=0.9)
    )
    assert list(manifest["study_id"]) == [study_pseudonym("R1")]
    by_folder = quarantine.groupby(quarantine["path"].str.split("/").str[1])["rule"].agg(set).to_dict()
    assert by_folder["noreport"] == {"study_without_report"}
    assert by_folder["dup1"] == by_folder["dup2"] == by_folder["duprep"] == {"duplicate_accession"}
    orphan = quarantine[quarantine["rule"] == "report_without_study"]
    assert list(orphan["path"]) == ["reports.csv:line 6"] and "R9" not in orphan["message"].iloc[0]
    assert summary["studies_quarantined"] == {"duplicate_accession": 2, "study_without_report": 1}
    # 4 imaging studies + 1 orphan report, 4 of them quarantined.
    assert summary["quarantine_share"] == pytest.approx(4 / 5) and summary["passed"]
    reports = pd.read_csv(tmp_path / "out" / "reports.csv")
    assert list(reports.columns) == ["study_id", "patient_id", "findings", "impression"]
    assert list(reports["study_id"]) == [study_pseudonym("R1")]
    assert_counts_add_up(summary)


def test_outputs_are_deterministic_and_independent_of_workers(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    for i in range(3):
        write_series(
            drop / "dicom" / f"s{i}", chest_phantom(16, 16, 12, seed=i), accession=f"D{i}", patient_id=f"P{i}"
        )
    write_reports(drop, [(f"D{i}", f"P{i}", "x", "y") for i in range(3)])
    run(drop, tmp_path / "a")
    run(drop, tmp_path / "b", dataclasses.replace(CFG, workers=2))
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 5 + 3  # 4 CSVs, key_fingerprint.txt, 3 volumes
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    manifest = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert list(manifest["study_id"]) == sorted(manifest["study_id"])


def test_stale_volumes_are_removed_and_inputs_untouched(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    paths = write_series(drop / "dicom" / "s", chest_phantom(16, 16, 12), accession="S1", patient_id="P1")
    write_reports(drop, [("S1", "P1", "x", "y")])
    before = {p: p.read_bytes() for p in paths}
    stale = tmp_path / "out" / "volumes" / "s-0000000000000000.nii.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    run(drop, tmp_path / "out")
    assert not stale.exists()
    assert all(p.read_bytes() == b for p, b in before.items())


def test_missing_key_outside_demo_mode_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXACT_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("EXACT_MODE", "production")
    with pytest.raises(MissingKeyError, match="EXACT_PSEUDONYM_KEY"):
        ingest_drop(tmp_path, tmp_path / "out", CFG, progress=False)


def test_scrubber_removes_names_ids_and_dates_but_keeps_findings() -> None:
    scrub = Scrubber(["SMITH^ANNA^M", "St. Elsewhere Clinic"], {"ACC123": "s-abc", "MRN99": "p-def"})
    text = "Anna Smith (MRN99, acc ACC123), seen at St. Elsewhere Clinic on 2021-03-04 and 4 March 2021; id 12345678. 2 mm nodule."
    out = scrub(text)
    for leaked in ("Anna", "Smith", "MRN99", "ACC123", "Elsewhere", "2021", "12345678"):
        assert leaked.lower() not in out.lower(), leaked
    assert "s-abc" in out and "p-def" in out and "2 mm nodule" in out
