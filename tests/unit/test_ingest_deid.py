"""Report text through ingest: >= 100 identifier forms (tests/unit/deid_corpus.py) plus header-derived
ones (names, a private-tag value, surnames as folder names) leave no trace in any output."""

from __future__ import annotations

import csv
import gzip
import sys
from pathlib import Path

import pandas as pd
import pytest
from pydicom.dataset import Dataset

from exact_ct.cli import main as exact_main
from exact_ct.ingest.deid import Scrubber
from tests.support.dicom_series import chest_phantom, write_series

sys.path.insert(0, str(Path(__file__).parent))
from deid_corpus import CLINICAL, FORMS, leaked  # noqa: E402

PRIVATE = "VNDRX77123 Q"  # a private-tag value that a report also quotes
SURNAMES = ["Pemberton-Rowe", "Castellanos", "Hargreaves"]


def test_the_corpus_has_at_least_100_forms_and_each_leaks_without_scrubbing() -> None:
    assert len(FORMS) >= 100
    assert all(leaked(text, secrets) == secrets for _, text, secrets in FORMS)  # the check can fail


@pytest.mark.parametrize(
    ("kind", "text", "secrets"), FORMS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(FORMS)]
)
def test_every_identifier_form_is_removed(kind: str, text: str, secrets: list[str]) -> None:
    out = Scrubber()(text)
    assert leaked(out, secrets) == [], out


def test_clinical_sentences_are_left_as_they_are() -> None:
    scrub = Scrubber()
    assert [s for s in CLINICAL if scrub(s) != s] == []


def test_identifiers_leave_no_trace_after_ingest(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    drop = tmp_path / "drop"
    n = len(SURNAMES)
    groups = [FORMS[i::n] for i in range(n)]

    def private_tag(ds: Dataset, k: int) -> None:
        block = ds.private_block(0x0013, "VENDOR X", create=True)
        block.add_new(0x10, "LO", PRIVATE)

    rows = []
    for i, surname in enumerate(SURNAMES):
        acc = f"ACCD{i:04d}"
        folder = drop / "dicom" / f"{surname}_Zelphine_{19500101 + i}"
        name = f"{surname.upper()}^ZELPHINE"
        write_series(folder / "series", chest_phantom(16, 16, 12, seed=i), accession=acc,
                     patient_id=f"PIDD{i}", patient_name=name, edit=private_tag)  # fmt: skip
        # a scout in the same folder: listed in skipped.csv under the surname folder
        write_series(folder / "scout", chest_phantom(16, 16, 1, seed=9), accession=acc, patient_id=f"PIDD{i}",
                     patient_name=name, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))  # fmt: skip
        text = " ".join(t for _, t, _ in groups[i])
        rows.append(
            [acc, f"PIDD{i}", f"{text} Vendor note {PRIVATE}. {surname} Zelphine seen.", " ".join(CLINICAL)]
        )
    # a study whose only files are not CT: quarantined; its folder's surname comes from its own header
    write_series(drop / "dicom" / "Quillfeather_Orlaith" / "mr", chest_phantom(16, 16, 12, seed=5), accession="ACCMR9",
                 patient_id="PIDMR9", patient_name="QUILLFEATHER^ORLAITH", modality="MR")  # fmt: skip
    with open(drop / "reports.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["accession_number", "patient_id", "findings", "impression"])
        w.writerows(rows)
    out = tmp_path / "out"
    assert exact_main(["ingest", str(drop), str(out), "--workers", "1", "--no-progress"]) == 0
    captured = capfd.readouterr()

    reports = pd.read_csv(out / "reports.csv", dtype=str, keep_default_na=False)
    assert len(reports) == n
    secrets = [s for _, _, ss in FORMS for s in ss] + [PRIVATE, "VNDRX77123", *SURNAMES, "Quillfeather"]
    for _, row in reports.iterrows():  # numbers also compared digit by digit, per field
        for field in ("findings", "impression"):
            assert leaked(row[field], secrets) == [], row[field]
        assert row["impression"] == " ".join(CLINICAL)  # clinical text untouched
    texts = {"stdout": captured.out, "stderr": captured.err}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            texts[path.name] = (gzip.decompress(data) if path.name.endswith(".gz") else data).decode(
                "latin-1"
            )
    skipped = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    assert (skipped["reason"] == "localizer").sum() == n and (quarantine["rule"] == "not_ct").sum() == 12
    for where, text in texts.items():
        for secret in [*secrets, "ZELPHINE", "ORLAITH", "19500101"]:
            assert secret.lower() not in text.lower(), f"{secret} leaked into {where}"
