"""Hostile and malformed inputs: each ends as a named quarantine row, the rest of the batch goes on.

Burned-in annotations, broken rescale values, wrongly signed pixels, absurd header sizes, deflate
bombs, paths over the OS limit, non-UTF-8 file names, duplicated or wrongly encoded report columns.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from exact_ct.ingest import IngestConfig, ingest_drop
from tests.support.dicom_series import chest_phantom, write_series

CFG = IngestConfig(workers=1)
HEADER = ["accession_number", "patient_id", "findings", "impression"]


def write_reports(drop: Path, accessions: list[str]) -> None:
    drop.mkdir(parents=True, exist_ok=True)
    with open(drop / "reports.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows([(a, f"P{a}", "No effusion.", "Normal.") for a in accessions])


def good_study(drop: Path, accession: str = "ACCGOOD1", seed: int = 0) -> None:
    write_series(
        drop / "dicom" / accession, chest_phantom(16, 16, 12, seed=seed), accession=accession,
        patient_id=f"P{accession}",
    )  # fmt: skip


def run(drop: Path, out: Path, cfg: IngestConfig = CFG) -> tuple[dict, pd.DataFrame]:
    summary = ingest_drop(drop, out, cfg, progress=False)
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    assert summary["files_in"] == summary["files_used"] + sum(summary["files_skipped"].values()) + sum(
        summary["files_quarantined"].values()
    )
    return summary, quarantine


def rules_under(quarantine: pd.DataFrame, folder: str) -> set[str]:
    return set(quarantine.loc[quarantine["path"].str.contains(folder, regex=False), "rule"])


def test_burned_in_annotation_is_quarantined_unless_allowed(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    good_study(drop)

    def burned(ds, k):  # type: ignore[no-untyped-def]
        ds.BurnedInAnnotation = "YES"

    write_series(drop / "dicom" / "burned", chest_phantom(16, 16, 12, 1), accession="ACCBURN1", edit=burned)
    write_reports(drop, ["ACCGOOD1", "ACCBURN1"])
    summary, quarantine = run(drop, tmp_path / "out")
    assert rules_under(quarantine, "burned") == {"burned_in_annotation"}
    assert summary["files_quarantined"]["burned_in_annotation"] == 12 and summary["studies_used"] == 1

    summary, _ = run(drop, tmp_path / "out2", dataclasses.replace(CFG, allow_burned_in_annotation=True))
    manifest = pd.read_csv(tmp_path / "out2" / "manifest.csv", dtype=str, keep_default_na=False)
    assert summary["studies_used"] == 2
    assert manifest["qc_flags"].str.contains("burned_in_annotation").sum() == 1


@pytest.mark.parametrize("value", ["NaN", "inf", "", "0"])
def test_non_finite_or_zero_rescale_slope_is_quarantined_not_taken_as_one(tmp_path: Path, value: str) -> None:
    drop = tmp_path / "drop"
    good_study(drop)

    def bad(ds, k):  # type: ignore[no-untyped-def]
        ds["RescaleSlope"].value = value

    write_series(drop / "dicom" / "badslope", chest_phantom(16, 16, 12, 2), accession="ACCSLOPE", edit=bad)
    write_reports(drop, ["ACCGOOD1", "ACCSLOPE"])
    summary, quarantine = run(drop, tmp_path / "out")
    assert rules_under(quarantine, "badslope") == {"invalid_rescale"}
    assert summary["studies_used"] == 1


def test_non_finite_intercept_is_quarantined(tmp_path: Path) -> None:
    drop = tmp_path / "drop"

    def bad(ds, k):  # type: ignore[no-untyped-def]
        ds["RescaleIntercept"].value = "NaN"

    write_series(drop / "dicom" / "badicpt", chest_phantom(16, 16, 12, 2), accession="ACCICPT1", edit=bad)
    write_reports(drop, ["ACCICPT1"])
    _, quarantine = run(drop, tmp_path / "out")
    assert rules_under(quarantine, "badicpt") == {"invalid_rescale"}


def test_signed_12_bit_pixels_stored_unsigned_are_a_named_rule(tmp_path: Path) -> None:
    """BitsStored 12 + PixelRepresentation 1 with unsigned values: 1500 HU would read as -2596 HU."""
    drop = tmp_path / "drop"
    good_study(drop)
    hu = chest_phantom(16, 16, 12, 3)
    hu[7:9, 7:9, :] = 1500  # bone: stored 2524, above the signed 12-bit maximum 2047

    def signed12(ds, k):  # type: ignore[no-untyped-def]
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 1

    write_series(drop / "dicom" / "signed", hu, accession="ACCSIGN1", edit=signed12)
    write_reports(drop, ["ACCGOOD1", "ACCSIGN1"])
    summary, quarantine = run(drop, tmp_path / "out")
    assert rules_under(quarantine, "signed") == {"pixel_sign_error"}
    assert summary["studies_quarantined"] == {"pixel_sign_error": 1} and summary["studies_used"] == 1


def test_correctly_signed_12_bit_pixels_with_padding_pass(tmp_path: Path) -> None:
    """Genuinely signed 12-bit data (intercept 0) with a -2000 padding ring is a good series."""
    drop = tmp_path / "drop"
    hu = chest_phantom(16, 16, 12, 4)
    hu[0, :, :] = -2000  # padding outside the field of view

    def signed12(ds, k):  # type: ignore[no-untyped-def]
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 1
        ds.PixelData = hu[:, :, k].astype("<i2").tobytes()

    write_series(drop / "dicom" / "ok", hu, accession="ACCSIGN2", intercept=0.0, edit=signed12)
    write_reports(drop, ["ACCSIGN2"])
    summary, quarantine = run(drop, tmp_path / "out")
    assert summary["studies_used"] == 1, quarantine.to_dict("records")


def test_absurd_header_matrix_is_quarantined_before_any_allocation(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    good_study(drop)

    def huge(ds, k):  # type: ignore[no-untyped-def]
        ds.Rows = ds.Columns = 65535  # 8 GiB per slice if anything believed it

    write_series(drop / "dicom" / "huge", chest_phantom(16, 16, 12, 5), accession="ACCHUGE1", edit=huge)
    write_reports(drop, ["ACCGOOD1", "ACCHUGE1"])
    summary, quarantine = run(drop, tmp_path / "out")
    assert rules_under(quarantine, "huge") == {"oversized_image"}
    assert summary["studies_used"] == 1


def test_series_above_the_voxel_cap_is_quarantined(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    good_study(drop)
    write_series(drop / "dicom" / "big", chest_phantom(32, 32, 12, 6), accession="ACCBIG01")
    write_reports(drop, ["ACCGOOD1", "ACCBIG01"])
    summary, quarantine = run(
        drop, tmp_path / "out", dataclasses.replace(CFG, max_volume_voxels=16 * 16 * 12)
    )
    assert rules_under(quarantine, "big") == {"oversized_image"}
    assert summary["studies_used"] == 1


def test_deflate_bomb_is_quarantined_from_its_header_read(tmp_path: Path) -> None:
    """A deflated file inflating beyond max_file_mb never reaches pydicom's whole-file inflate."""
    drop = tmp_path / "drop"
    good_study(drop)
    hu = np.zeros((512, 512, 12), dtype=np.int16) - 1000  # compresses ~1000x

    def deflate(ds, k):  # type: ignore[no-untyped-def]
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian

    paths = write_series(drop / "dicom" / "bomb", hu, accession="ACCBOMB1", edit=deflate)
    assert max(p.stat().st_size for p in paths) < 20_000  # 512 KiB of pixels each, inflated
    write_reports(drop, ["ACCGOOD1", "ACCBOMB1"])
    summary, quarantine = run(drop, tmp_path / "out", dataclasses.replace(CFG, max_file_mb=0.25))
    assert rules_under(quarantine, "bomb") == {"oversized_file"}
    assert summary["studies_used"] == 1


def test_path_over_the_os_limit_is_a_counted_quarantine_row(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    good_study(drop)
    write_reports(drop, ["ACCGOOD1"])
    # Folders nested beyond PATH_MAX (created relative to an open folder, as a copy tool would).
    fd = os.open(drop, os.O_RDONLY)
    try:
        for _ in range(20):
            os.mkdir("d" * 250, dir_fd=fd)
            nxt = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with os.fdopen(os.open("IM0001", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as f:
            f.write(b"not read")
    finally:
        os.close(fd)
    summary, quarantine = run(drop, tmp_path / "out")
    assert summary["files_quarantined"].get("path_too_long", 0) >= 1
    assert summary["studies_used"] == 1


def test_non_utf8_file_name_is_quarantined_and_the_outputs_are_written(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    good_study(drop)
    write_reports(drop, ["ACCGOOD1"])
    bad_dir = os.fsencode(drop / "dicom") + b"/M\xfcller"  # Latin-1 folder name
    os.makedirs(bad_dir)
    with open(bad_dir + b"/IM\xe90001", "wb") as f:
        f.write(b"x" * 200)
    summary, quarantine = run(drop, tmp_path / "out")
    assert summary["files_quarantined"] == {"non_utf8_path": 1}
    (row,) = quarantine[quarantine["rule"] == "non_utf8_path"].to_dict("records")
    assert "\\xfc" in row["path"] and "\\xe9" in row["path"]
    assert summary["studies_used"] == 1


def test_messages_name_rules_not_header_values(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    write_series(
        drop / "dicom" / "mr", chest_phantom(16, 16, 12, 7), accession="ACCMR001", modality="SMITHMR"
    )
    write_series(
        drop / "dicom" / "abd", chest_phantom(16, 16, 12, 8), accession="ACCABD01", body_part="ABDOMEN"
    )
    write_reports(drop, ["ACCMR001", "ACCABD01"])
    _, quarantine = run(drop, tmp_path / "out")
    assert {"not_ct", "not_chest"} <= set(quarantine["rule"])
    text = " ".join(quarantine["message"]).upper()
    assert "SMITHMR" not in text and "ABDOMEN" not in text


def test_duplicated_findings_column_is_a_clear_error(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    good_study(drop)
    with open(drop / "reports.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*HEADER, "findings"])
        w.writerow(["ACCGOOD1", "PACCGOOD1", "real findings", "Normal.", "other findings"])
    with pytest.raises(ValueError, match=r"reports.csv: column\(s\) \['findings'\] appear more than once"):
        ingest_drop(drop, tmp_path / "out", CFG, progress=False)


def test_utf16_reports_name_the_encoding(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    good_study(drop)
    text = ",".join(HEADER) + "\nACCGOOD1,PACCGOOD1,No effusion.,Normal.\n"
    (drop / "reports.csv").write_bytes(text.encode("utf-16"))
    with pytest.raises(ValueError, match="UTF-16"):
        ingest_drop(drop, tmp_path / "out", CFG, progress=False)


def test_latin1_report_rows_name_the_encoding(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    good_study(drop)
    good_study(drop, "ACCGOOD2", seed=1)
    text = (
        ",".join(HEADER)
        + "\nACCGOOD1,PACCGOOD1,Épanchement pleural.,Normal.\nACCGOOD2,PACCGOOD2,No effusion.,ok\n"
    )
    (drop / "reports.csv").write_bytes(text.encode("latin-1"))
    summary, quarantine = run(drop, tmp_path / "out")
    (row,) = quarantine[quarantine["rule"] == "invalid_utf8"].to_dict("records")
    assert "Windows-1252 (Latin-1)" in row["message"]
    assert summary["studies_used"] == 1


def test_overlong_report_row_is_quarantined_unread(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    good_study(drop)
    good_study(drop, "ACCGOOD2", seed=1)
    write_reports(drop, ["ACCGOOD1", "ACCGOOD2"])
    frame = pd.read_csv(drop / "reports.csv", dtype=str)
    frame.loc[1, "findings"] = "No pleural effusion. Call 555-231-4477. " * 200
    frame.to_csv(drop / "reports.csv", index=False)
    summary, quarantine = run(drop, tmp_path / "out", dataclasses.replace(CFG, max_report_chars=1000))
    assert summary["reports_quarantined"] == {"report_too_long": 1}
    assert summary["studies_quarantined"] == {"study_without_report": 1} and summary["studies_used"] == 1
    reports = pd.read_csv(tmp_path / "out" / "reports.csv", dtype=str)
    assert len(reports) == 1 and "555" not in (tmp_path / "out" / "reports.csv").read_text()
