"""No planted identifier (headers, nested sequences, private tags, report CSV) leaves ingest or reaches logs."""

from __future__ import annotations

import csv
import gzip
import logging
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from exact_ct.cli import main as exact_main
from tests.support.dicom_series import chest_phantom, write_series

# Unique strings that appear nowhere else; each one must vanish from every output and log line.
NAME = "QUIXOTEZ^ZEPHYRINA"
PID = "PIDX7731Q"
ACC = "ACCX99321Z"
BIRTH = "19370412"
INSTITUTION = "Hospital Zyxwvut Memorial"
NESTED_NAME = "BLORFENWICK^ODALYS"
NESTED_ID = "NESTEDID5521"
PRIVATE = "PRIVATEZQ8841"
DESCRIPTION = "FREETEXTKQW3 protocol"
PHYSICIAN = "GRUMBELDORF^ISAAC"
PLANTED = [
    "QUIXOTEZ",
    "ZEPHYRINA",
    PID,
    ACC,
    BIRTH,
    "1937-04-12",
    "Zyxwvut",
    "BLORFENWICK",
    "ODALYS",
    NESTED_ID,
    PRIVATE,
    "FREETEXTKQW3",
    "GRUMBELDORF",
]


def plant(ds: Dataset, k: int) -> None:
    ds.PatientBirthDate = BIRTH
    ds.InstitutionName = INSTITUTION
    ds.ReferringPhysicianName = PHYSICIAN
    ds.StudyDescription = DESCRIPTION
    ds.SeriesDescription = DESCRIPTION
    item = Dataset()
    item.PatientName = NESTED_NAME
    item.PatientID = NESTED_ID
    ds.OtherPatientIDsSequence = Sequence([item])
    block = ds.private_block(0x0011, "ACME EXPORT", create=True)
    block.add_new(0x01, "LO", PRIVATE)


def test_planted_identifiers_never_leave_ingest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    drop = tmp_path / "drop"
    # A folder named after the patient id, as some PACS exports do.
    write_series(
        drop / "dicom" / PID / "series1",
        chest_phantom(16, 16, 12),
        accession=ACC,
        patient_id=PID,
        patient_name=NAME,
        edit=plant,
    )
    with open(drop / "reports.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["accession_number", "patient_id", "findings", "impression"])
        w.writerow(
            [
                ACC,
                PID,
                f"Patient Zephyrina Quixotez (MRN {PID}, born 1937-04-12), accession {ACC}. No pleural effusion.",
                f"Discussed with Dr. Grumbeldorf and Dr Blorfenwick at {INSTITUTION} on 12/04/2021. Small nodule.",
            ]
        )
        # An orphan report with identifiers: quarantined, and its text must not leak either.
        w.writerow(["ACCORPHAN1", "PIDORPHAN", "Quixotez again.", "x"])
    (drop / "_COMPLETE").touch()
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    rc = exact_main(["-v", "ingest", str(drop), str(out), "--workers", "1", "--no-progress"])
    assert rc == 0  # 1 of 2 units (the orphan report) quarantined: 0.5 is not above max_quarantine_share
    captured = capfd.readouterr()
    texts = {"log": caplog.text, "stdout": captured.out, "stderr": captured.err}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            texts[str(path.relative_to(out))] = (
                gzip.decompress(data) if path.name.endswith(".gz") else data
            ).decode("latin-1")
    assert any(name.startswith("volumes/") for name in texts) and "reports.csv" in texts
    for where, text in texts.items():
        for secret in [*PLANTED, "ACCORPHAN1", "PIDORPHAN"]:
            assert secret.lower() not in text.lower(), f"{secret} leaked into {where}"
    assert "No pleural effusion." in texts["reports.csv"] and "Small nodule." in texts["reports.csv"]
