"""Ingest on the real public fixtures in ../shared/data/ct (see SOURCES.md)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from exact_ct.ingest import IngestConfig, ingest_drop
from exact_ct.ingest.headers import read_header
from exact_ct.ingest.pipeline import build_series
from exact_ct.ingest.volume import assemble_series

CT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ct"
TS = CT / "totalseg"
CFG = IngestConfig(workers=1, require_report=False, max_quarantine_share=1.0)


@pytest.fixture(autouse=True)
def _real_data_present() -> None:
    if not CT.is_dir():
        pytest.fail(f"real test data not found at {CT} (expected ../shared/data beside the repository)")


def make_drop(tmp_path: Path, *sources: Path, nifti: dict[str, Path] | None = None) -> Path:
    drop = tmp_path / "drop"
    for src in sources:
        dest = drop / "dicom" / src.name
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / src.name)
    for accession, src in (nifti or {}).items():
        (drop / "nifti").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, drop / "nifti" / f"{accession}.nii.gz")
    drop.mkdir(parents=True, exist_ok=True)
    return drop


def ingest(drop: Path, out: Path, cfg: IngestConfig = CFG) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    summary = ingest_drop(drop, out, cfg, progress=False)
    assert summary["files_in"] == summary["files_used"] + sum(summary["files_skipped"].values()) + sum(
        summary["files_quarantined"].values()
    )
    return (
        summary,
        pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False),
        pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False),
    )


def test_totalsegmentator_jpeg2000_series_lands_on_the_reference_grid(tmp_path: Path) -> None:
    drop = make_drop(tmp_path, TS / "example_ct_dicom")
    summary, manifest, quarantine = ingest(drop, tmp_path / "out")
    assert summary["studies_used"] == 1 and len(quarantine) == 0  # empty UIDs, J2K, 3 mm at 2 mm spacing
    img = nib.load(tmp_path / "out" / manifest.iloc[0]["volume"])
    ref = nib.as_closest_canonical(nib.load(TS / "example_seg_dicom.nii.gz"))
    assert img.shape == ref.shape == (512, 512, 20)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-3)
    hu = np.asanyarray(img.dataobj)
    seg = np.asanyarray(ref.dataobj)
    # Voxel alignment, not just the same grid: TotalSegmentator's own labels (v2 ids) sit on the
    # right tissue: liver (5) on contrast-enhanced soft tissue, vertebrae T11/T12 on bone, colon on gas.
    assert 40 < np.median(hu[seg == 5]) < 200
    assert np.median(hu[np.isin(seg, [32, 33])]) > 150
    assert np.median(hu[seg == 20]) < -300
    assert manifest.iloc[0]["spacing_xyz_mm"] == "0.976562x0.976562x2"


def test_volume_voxels_map_to_the_dicom_pixel_positions(tmp_path: Path) -> None:
    """Geometry oracle: every slice's pixel (i, j) lands at IPP + j*dc*row_dir + i*dr*col_dir (in RAS)."""
    drop = make_drop(tmp_path, TS / "example_ct_dicom")
    _, manifest, _ = ingest(drop, tmp_path / "out")
    img = nib.load(tmp_path / "out" / manifest.iloc[0]["volume"])
    hu = np.asanyarray(img.dataobj)
    inv = np.linalg.inv(img.affine)
    for f in sorted((TS / "example_ct_dicom").iterdir())[::7]:
        ds = pydicom.dcmread(f)
        ipp = np.array(ds.ImagePositionPatient, float)
        row_dir, col_dir = (
            np.array(ds.ImageOrientationPatient[:3], float),
            np.array(ds.ImageOrientationPatient[3:], float),
        )
        dr, dc = (float(v) for v in ds.PixelSpacing)
        pixels = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        for i, j in [(0, 0), (100, 400), (511, 3)]:
            lps = ipp + j * dc * row_dir + i * dr * col_dir
            vox = inv @ np.r_[lps * [-1, -1, 1], 1.0]
            x, y, z = np.rint(vox[:3]).astype(int)
            assert np.allclose(vox[:3], [x, y, z], atol=1e-3)
            assert hu[x, y, z] == pixels[i, j]


def test_enhanced_ct_frames_decode_with_their_geometry() -> None:
    path = CT / "pydicom" / "eCT_Supplemental.dcm"
    header = read_header(str(path), "eCT.dcm", CFG)
    assert not isinstance(header, type(None)) and getattr(header, "multiframe", False)
    (spec,) = build_series([header], lambda text: "se-test")
    cfg = dataclasses.replace(CFG, min_slices=1, min_lung_share=0.0, min_air_share=0.0)
    vol = assemble_series(spec, cfg)
    ds = pydicom.dcmread(path)
    assert vol.hu.shape == (512, 512, 2) and vol.n_slices == 2
    np.testing.assert_allclose(np.diag(vol.affine)[:3], [0.388672, 0.388672, 10.0], atol=1e-6)
    inv = np.linalg.inv(vol.affine)
    row_dir, col_dir = np.array([-1.0, 0, 0]), np.array([0.0, 1, 0])  # IOP of the file (shared group)
    spacing = 0.388672
    frames = ds.pixel_array.astype(np.int32) - 1024
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        for i, j in [(256, 256), (200, 310), (300, 180)]:
            lps = ipp + j * spacing * row_dir + i * spacing * col_dir
            vox = inv @ np.r_[lps * [-1, -1, 1], 1.0]
            x, y, z = np.rint(vox[:3]).astype(int)
            assert np.allclose(vox[:3], [x, y, z], atol=1e-3)
            assert vol.hu[x, y, z] == frames[f][i, j]
    assert not np.array_equal(frames[0], frames[1])  # the frames differ, so a swap would be caught
    # Frame with ImagePositionPatient z = -149 (superior) must be the upper slice in RAS.
    assert vol.affine[2, 3] == pytest.approx(-159.0)


def test_identical_lungmask_slices_are_quarantined_as_duplicates(tmp_path: Path) -> None:
    drop = make_drop(tmp_path, CT / "lungmask_testdata")
    for lic in (drop / "dicom" / "lungmask_testdata").glob("LICENSE*"):
        lic.unlink()
    summary, manifest, quarantine = ingest(drop, tmp_path / "out")
    assert len(manifest) == 0
    assert list(quarantine["rule"]) == ["duplicate_slices", "duplicate_slices"]  # no Modality tag: no crash


def test_a_single_ct_slice_is_too_few(tmp_path: Path) -> None:
    drop = make_drop(tmp_path, CT / "pydicom" / "CT_small.dcm")
    _, manifest, quarantine = ingest(drop, tmp_path / "out")
    assert len(manifest) == 0 and list(quarantine["rule"]) == ["too_few_slices"]


def test_monai_series_with_irregular_positions_is_an_incomplete_series(tmp_path: Path) -> None:
    # 4 files of one series, InstanceNumber 18, 180, 181, 182 (and a 202.5 mm gap between positions):
    # the header rule (exact_ct.ingest.completeness) fires before the geometry rule missing_slices.
    drop = make_drop(tmp_path, CT / "monai_CT_DICOM_16x16x4")
    _, manifest, quarantine = ingest(drop, tmp_path / "out")
    assert len(manifest) == 0 and set(quarantine["rule"]) == {"incomplete_series"} and len(quarantine) == 4
    assert "4 of the 165 numbers" in quarantine["message"].iloc[0]


def test_nifti_inputs_abdomen_is_not_chest_and_lps_chest_is_reoriented(tmp_path: Path) -> None:
    drop = make_drop(
        tmp_path,
        nifti={"ABD1": TS / "example_ct.nii.gz", "CHEST1": TS / "pulmonary_report" / "ct_cropped.nii.gz"},
    )
    summary, manifest, quarantine = ingest(drop, tmp_path / "out")
    assert list(quarantine["rule"]) == ["not_chest"]  # example_ct.nii.gz: abdomen/pelvis, int32
    assert summary["studies_used"] == 1
    out = nib.load(tmp_path / "out" / manifest.iloc[0]["volume"])
    ref = nib.as_closest_canonical(nib.load(TS / "pulmonary_report" / "ct_cropped.nii.gz"))
    assert manifest.iloc[0]["source_orientation"] == "LPS" and nib.aff2axcodes(out.affine) == ("R", "A", "S")
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), np.asanyarray(ref.dataobj))


def test_int32_nifti_is_cast_and_flagged_when_chest_rule_allows(tmp_path: Path) -> None:
    drop = make_drop(tmp_path, nifti={"ABD1": TS / "example_ct.nii.gz"})
    _, manifest, _ = ingest(drop, tmp_path / "out", dataclasses.replace(CFG, min_lung_share=0.0))
    assert "cast_from_int32" in manifest.iloc[0]["qc_flags"]
    assert nib.load(tmp_path / "out" / manifest.iloc[0]["volume"]).get_data_dtype() == np.int16
