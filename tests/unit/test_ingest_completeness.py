"""Ingest never uses a partly copied or split series, and never follows a link (issue 22 items 1 and 7)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from exact_ct.ingest import IngestConfig, ingest_drop
from tests.support.dicom_series import chest_phantom, write_series

CFG = IngestConfig(workers=1)


def _reports(drop: Path, accessions: list[str]) -> None:
    drop.mkdir(parents=True, exist_ok=True)
    with open(drop / "reports.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["accession_number", "patient_id", "findings", "impression"])
        w.writerows([(a, f"P{a}", "Normal chest.", "") for a in accessions])


def _run(drop: Path, out: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    summary = ingest_drop(drop, out, CFG, progress=False)
    files = sum(summary["files_skipped"].values()) + sum(summary["files_quarantined"].values())
    assert summary["files_in"] == summary["files_used"] + files
    return (
        summary,
        pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False),
        pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False),
    )


def _images_in_acquisition(n: int):
    def edit(ds, k):
        ds.ImagesInAcquisition = n

    return edit


def test_partly_copied_and_split_series_are_quarantined_not_used_truncated(tmp_path):
    drop = tmp_path / "drop"
    hu = chest_phantom(n=12)
    # complete: 12 images, the scanner says 12
    write_series(drop / "dicom" / "a", hu, accession="ACC1", edit=_images_in_acquisition(12))
    # the last 4 of 16 images never arrived: no gap between the 12 present, so geometry passes
    write_series(drop / "dicom" / "b", hu, accession="ACC2", edit=_images_in_acquisition(16))
    # a slice lost from the middle: InstanceNumber 1..14 with 7 missing
    paths = write_series(drop / "dicom" / "c", chest_phantom(n=14), accession="ACC3")
    [lost] = [p for p in paths if pydicom.dcmread(p).InstanceNumber == 7]
    lost.unlink()
    # one series of 24 slices exported under two accession numbers, 12 slices each
    uid = "1.2.826.0.1.3680043.8.498.1"
    study = "1.2.826.0.1.3680043.8.498.2"
    write_series(drop / "dicom" / "d1", hu, accession="ACC4", series_uid=uid, study_uid=study)
    write_series(
        drop / "dicom" / "d2",
        hu,
        accession="ACC5",
        series_uid=uid,
        study_uid=study + ".5",
        origin=(-100.0, -120.0, -26.0),
    )
    _reports(drop, ["ACC1", "ACC2", "ACC3", "ACC4", "ACC5"])
    summary, manifest, quarantine = _run(drop, tmp_path / "out")
    assert summary["studies_used"] == 1 and len(manifest) == 1
    assert summary["studies_quarantined"] == {"incomplete_series": 2, "split_series": 2}
    by_rule = quarantine.groupby("rule")["path"].apply(lambda s: sorted({p.split("/")[1] for p in s}))
    assert by_rule.to_dict() == {"incomplete_series": ["b", "c"], "split_series": ["d1", "d2"]}
    assert summary["files_quarantined"] == {"incomplete_series": 12 + 13, "split_series": 24}
    messages = " ".join(quarantine["message"])
    assert "ImagesInAcquisition says 16" in messages and "13 of the 14 numbers" in messages
    assert "ACC" not in messages and "1.2.826" not in messages  # counts only, no header value


def test_links_and_special_files_in_a_drop_are_quarantined_and_never_read(tmp_path):
    drop = tmp_path / "drop"
    write_series(drop / "dicom" / "a", chest_phantom(n=12), accession="ACC1")
    outside = tmp_path / "outside"
    write_series(outside / "s", chest_phantom(n=12, seed=3), accession="ACC9")
    (drop / "dicom" / "passwd").symlink_to("/etc/passwd")
    (drop / "dicom" / "environ").symlink_to("/proc/self/environ")
    (drop / "dicom" / "linked").symlink_to(outside, target_is_directory=True)
    os.mkfifo(drop / "dicom" / "pipe")  # opening it for reading would block the batch forever
    (drop / "_MANIFEST.sha256").write_text("")  # drop metadata, not an input
    _reports(drop, ["ACC1", "ACC9"])
    summary, manifest, quarantine = _run(drop, tmp_path / "out")
    assert summary["studies_used"] == 1 and summary["files_used"] == 12
    rules = dict(zip(quarantine["path"], quarantine["rule"], strict=True))
    assert rules == {
        "dicom/environ": "symlink",
        "dicom/linked": "symlink",
        "dicom/passwd": "symlink",
        "dicom/pipe": "not_regular_file",
        "reports.csv:line 3": "report_without_study",  # ACC9 lies behind the link: never read
    }
    assert summary["files_in"] == 12 + 4


pytestmark = pytest.mark.timeout(300)
