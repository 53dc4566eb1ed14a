"""A generated bad-input hospital drop: synthetic studies from exact_ct.synth, then broken on purpose.

Each case is one study (or one report row) with the outcome the documented rules promise for it
(docs/ingest.md, docs/reports.md). ``build_corpus`` returns the drop and the expected outcome per case.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom

from exact_ct.privacy import study_pseudonym
from exact_ct.synth import DropConfig, render_study, write_drop

SEED = 11
N_SYNTH = 11
TEN_MB = 10 * 1024 * 1024
#: Cases whose DICOM files lie in ``dicom/<case name>/`` (so quarantine.csv paths name the case).
DICOM_CASES = (
    "report_invalid_utf8", "report_10mb", "truncated_dicom", "wrong_modality", "missing_slice",
    "duplicated_slice", "scan_without_report", "duplicate_accession", "empty_report",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One bad (or good) input and where it must end.

    ``stage``: the stage that stops it ("" = it goes through every stage); ``rule``: the named reason;
    ``accession``: the study's accession ("" for a report row without a study of its own).
    """

    name: str
    accession: str
    stage: str
    rule: str

    @property
    def study_id(self) -> str:
        return study_pseudonym(self.accession) if self.accession else ""


def _series_files(study_dir: Path) -> dict[str, list[Path]]:
    """SeriesInstanceUID -> its image files (localizers left out), each list sorted along z."""
    by_series: dict[str, list[tuple[float, Path]]] = {}
    for p in sorted(study_dir.rglob("*")):
        if not p.is_file():
            continue
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if "LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])]:
            continue
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append((float(ds.ImagePositionPatient[2]), p))
    return {uid: [p for _, p in sorted(items)] for uid, items in by_series.items()}


def _study_dirs(drop: Path, accessions: list[str]) -> dict[str, Path]:
    """Accession -> its study folder (synth writes ``dicom/<Patient>_<id>/CT_<date>_<acc[-6:]>/``)."""
    found = {}
    for a in accessions:
        (d,) = sorted((drop / "dicom").glob(f"*/CT_*_{a[-6:]}"))
        found[a] = d
    return found


def _edit_all(files: list[Path], edit) -> None:  # type: ignore[no-untyped-def]
    for p in files:
        ds = pydicom.dcmread(p)
        edit(ds)
        ds.save_as(p, enforce_file_format=True)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The header is filled by hand: nibabel refuses to derive a qform from a singular affine.
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(data.dtype)
    hdr.set_data_shape(data.shape)
    hdr.set_sform(affine, code=1)
    hdr.set_qform(None, code=0)
    nib.save(nib.Nifti1Image(data, None, header=hdr), str(path))


def build_corpus(out: Path, shared_data: Path) -> tuple[Path, list[Case]]:
    """Write the bad drop to ``out/drop``; returns (drop, cases)."""
    write_drop(out, DropConfig(studies=N_SYNTH, seed=SEED, batch="bad"), workers=2, progress=False)
    drop = out / "drop"
    studies = pd.read_csv(out / "truth" / "studies.csv", dtype=str)
    reports = pd.read_csv(drop / "reports.csv", dtype=str, keep_default_na=False)
    acc = list(studies["accession_number"])
    found = _study_dirs(drop, acc)
    # Each study moves to a folder named after its case, so quarantine.csv paths name the case.
    names = [*DICOM_CASES[:6], "mixed_a", "mixed_b", *DICOM_CASES[6:]]
    dirs = {}
    for a, name in zip(acc, names, strict=True):
        dirs[a] = drop / "dicom" / name
        shutil.move(str(found[a]), dirs[a])
    for leftover in sorted((drop / "dicom").iterdir()):
        if leftover.name not in names:
            shutil.rmtree(leftover)  # the emptied patient folders
    cases: list[Case] = []

    # 0: invalid UTF-8 in its report row (patched in after the CSV is written); 1: a 10 MB report.
    cases.append(Case("report_invalid_utf8", acc[0], "ingest", "study_without_report"))

    # 2: truncated DICOM: every image file of the study cut to half its length (pixel data lost).
    for p in (q for files in _series_files(dirs[acc[2]]).values() for q in files):
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    cases.append(Case("truncated_dicom", acc[2], "ingest", "unreadable_file"))

    # 3: wrong modality on every file of the study.
    _edit_all([p for p in dirs[acc[3]].rglob("*") if p.is_file()], lambda ds: setattr(ds, "Modality", "MR"))
    cases.append(Case("wrong_modality", acc[3], "ingest", "not_ct"))

    # 4: a missing slice: the middle file of every series removed (an InstanceNumber gap: the header rule
    # incomplete_series fires before the geometry rule missing_slices would).
    for files in _series_files(dirs[acc[4]]).values():
        files[len(files) // 2].unlink()
    cases.append(Case("missing_slice", acc[4], "ingest", "incomplete_series"))

    # 5: duplicated slices: one file of every series sent twice (same position).
    for files in _series_files(dirs[acc[5]]).values():
        src = files[len(files) // 3]
        shutil.copy(src, src.with_name(src.name + "_copy"))
    cases.append(Case("duplicated_slice", acc[5], "ingest", "duplicate_positions"))

    # 6 + 7: mixed series in one folder: both studies' files moved into one flat folder; both must work.
    mixed = drop / "dicom" / "mixed_folder"
    mixed.mkdir()
    for a in (acc[6], acc[7]):
        for i, p in enumerate(sorted(q for q in dirs[a].rglob("*") if q.is_file())):
            shutil.move(str(p), mixed / f"{a[-4:]}_{i:04d}")
        shutil.rmtree(dirs[a])
    cases += [Case("mixed_folder", acc[6], "", ""), Case("mixed_folder", acc[7], "", "")]

    # 8: a scan without a report (its row removed).
    reports = reports[reports["accession_number"] != acc[8]]
    cases.append(Case("scan_without_report", acc[8], "ingest", "study_without_report"))

    # 9: duplicate accession: the report row appears twice.
    dup = reports[reports["accession_number"] == acc[9]]
    reports = pd.concat([reports, dup], ignore_index=True)
    cases.append(Case("duplicate_accession", acc[9], "ingest", "duplicate_accession"))

    # 10: empty report; 0: a 10 MB report (rows are edited below, after the CSV is written).
    reports.loc[reports["accession_number"] == acc[10], ["findings", "impression"]] = ""
    cases.append(Case("empty_report", acc[10], "parse_reports", "empty_report"))
    big = reports["accession_number"] == acc[1]
    reports.loc[big, "findings"] = ("No pleural effusion. " * (TEN_MB // 21 + 1))[:TEN_MB]
    # ingest quarantines the row unread (report_too_long, max_report_chars): the study has no report
    cases.append(Case("report_10mb", acc[1], "ingest", "study_without_report"))

    # A report row whose accession has no imaging study.
    ghost = "GHOST0000001"
    reports = pd.concat(
        [reports, pd.DataFrame([{**reports.iloc[0].to_dict(), "accession_number": ghost}])],
        ignore_index=True,
    )
    cases.append(Case("report_without_scan", ghost, "ingest", "report_without_study"))

    # NIfTI inputs, named by accession, each with its report row.
    good = render_study(50, SEED, batch="bad")
    nifti_rows = []

    def nifti_case(name: str, accession: str, data: np.ndarray, affine: np.ndarray, stage: str, rule: str):  # type: ignore[no-untyped-def]
        _nifti(drop / "nifti" / f"{accession}.nii.gz", data, affine)
        nifti_rows.append(
            {
                "accession_number": accession,
                "patient_id": f"PN{accession}",
                "findings": good.findings,
                "impression": good.impression,
            }
        )
        cases.append(Case(name, accession, stage, rule))

    hu = good.hu.astype(np.int16)
    nifti_case("nifti_good", "NIFTI0000001", hu, good.affine, "", "")
    with_nan = hu.astype(np.float32)
    with_nan[5, 5, 5] = np.nan
    nifti_case("nifti_nan", "NIFTI0000002", with_nan, good.affine, "ingest", "invalid_nifti")
    with_inf = hu.astype(np.float32)
    with_inf[6, 6, 6] = np.inf
    nifti_case("nifti_inf", "NIFTI0000003", with_inf, good.affine, "ingest", "invalid_nifti")
    singular = good.affine.copy()
    singular[:3, 2] = 0.0
    nifti_case("nifti_singular_affine", "NIFTI0000004", hu, singular, "ingest", "invalid_nifti")
    nifti_case(
        "one_slice",
        "NIFTI0000005",
        hu[:, :, hu.shape[2] // 2 : hu.shape[2] // 2 + 1],
        good.affine,
        "ingest",
        "too_few_slices",
    )
    abdomen = shared_data / "ct" / "totalseg" / "example_ct.nii.gz"
    shutil.copy(abdomen, drop / "nifti" / "NIFTI0000006.nii.gz")
    nifti_rows.append(
        {
            "accession_number": "NIFTI0000006",
            "patient_id": "PNABDOMEN",
            "findings": good.findings,
            "impression": good.impression,
        }
    )
    cases.append(Case("not_chest", "NIFTI0000006", "ingest", "not_chest"))

    reports = pd.concat([reports, pd.DataFrame(nifti_rows)], ignore_index=True)
    reports.to_csv(drop / "reports.csv", index=False, lineterminator="\n")

    # Invalid UTF-8 inside the report row of study 0: the bytes are patched after the CSV is written.
    raw = (drop / "reports.csv").read_bytes()
    row = raw.index(b"\n" + acc[0].encode() + b",") + 1
    at = raw.index(b',"', row) + 2  # the opening quote of the findings field
    (drop / "reports.csv").write_bytes(raw[:at] + b"\xff\xfe\xc3( " + raw[at:])
    return drop, cases
