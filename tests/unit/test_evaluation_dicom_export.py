"""DICOM export of `exact infer`: SEG frames on the source slices, references, SR text, dciodvfy."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from exact_ct.cli import main
from exact_ct.evaluation.dicom_export import (
    FINDINGS_SEG,
    LOCAL_SCHEME,
    ORGANS_SEG,
    REPORT_SR,
    SourceSeries,
    write_segs,
)
from exact_ct.schema import ABNORMALITIES, ORGANS


def _package(folder: Path) -> Path:
    """A tiny randomly initialised package whose thresholds make every finding positive."""
    import torch

    from exact_ct.dataset.grid import GridPlan
    from exact_ct.model.config import NetworkConfig, PoolingConfig
    from exact_ct.model.network import ExactNet
    from exact_ct.model.package import ModelPackage, save_package

    torch.manual_seed(0)
    net = NetworkConfig(channels=(4, 8))
    pkg = ModelPackage(
        ExactNet(net),
        net,
        PoolingConfig(),
        GridPlan((8.0, 8.0, 8.0), (24, 24, 16)),
        thresholds=dict.fromkeys(ABNORMALITIES, 0.0),
    )
    return save_package(pkg, folder)


REAL_SERIES = Path("ct") / "totalseg" / "example_ct_dicom"  # below ../shared/data
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


# ------------------------------------------------------------------ geometry on hand-made series


def _series(
    iop: list[float], n: int, rows: int, cols: int, spacing: tuple[float, float], step: float
) -> list[Dataset]:
    """Header-only CT images; files listed in reverse slice order (file order must not matter)."""
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(r, c)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k in range(n):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Test^Geometry", "GEO1"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20240101", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID, ds.SeriesNumber = "", "", "1", 2
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in np.array([-20.3, 14.1, -40.0]) + k * step * normal]
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = step
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        out.append(ds)
    return out[::-1]


def _pixel_ras(ds: Dataset) -> np.ndarray:
    """RAS mm of every pixel centre of one image, (rows, columns, 3), from its own DICOM attributes."""
    ipp = np.asarray(ds.ImagePositionPatient, float)
    iop = np.asarray(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    rr, cc = np.meshgrid(np.arange(int(ds.Rows)), np.arange(int(ds.Columns)), indexing="ij")
    lps = ipp + cc[..., None] * dc * iop[:3] + rr[..., None] * dr * iop[3:]
    return lps * LPS_TO_RAS


def _label(ras: np.ndarray) -> np.ndarray:
    """A label (0-9) that is a function of position alone, varying along every axis."""
    q = np.rint(ras * 10).astype(np.int64)
    return ((q[..., 0] // 17) * 3 + (q[..., 1] // 13) * 5 + (q[..., 2] // 11) * 7) % 10


def _canonical_grid(datasets: list[Dataset]) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned RAS+ grid through every pixel centre, built from the pixel positions alone."""
    pts = np.concatenate([_pixel_ras(ds).reshape(-1, 3) for ds in datasets])
    axes = [np.unique(np.round(pts[:, a], 4)) for a in range(3)]
    affine = np.eye(4)
    for a, ax in enumerate(axes):
        affine[a, a] = ax[1] - ax[0]
        affine[a, 3] = ax[0]
    ii, jj, kk = np.meshgrid(*[np.arange(len(ax)) for ax in axes], indexing="ij")
    ras = np.stack([ii, jj, kk], -1) * np.diag(affine)[:3] + affine[:3, 3]
    return _label(ras).astype(np.uint8), affine


@pytest.mark.parametrize(
    "iop",
    [
        [1, 0, 0, 0, 1, 0],  # axial, rows run posterior
        [-1, 0, 0, 0, -1, 0],  # axial rotated 180 degrees in plane
        [0, 1, 0, -1, 0, 0],  # axial, columns run posterior (transposed)
        [1, 0, 0, 0, 0, -1],  # coronal
        [0, 1, 0, 0, 0, -1],  # sagittal
    ],
)
def test_seg_frames_hold_the_label_at_each_source_pixel(tmp_path: Path, iop: list[float]) -> None:
    datasets = _series(iop, n=7, rows=9, cols=12, spacing=(0.8, 1.1), step=2.5)
    organs, affine = _canonical_grid(datasets)
    source = SourceSeries(tuple(datasets))
    summary = write_segs(tmp_path, source, organs, {}, affine, "test")
    assert summary["max_offset_voxels"] < 1e-6
    seg = hd.seg.segread(tmp_path / ORGANS_SEG)
    assert seg.get_segment_numbers() == list(range(1, 10))
    assert [seg.get_segment_description(i).SegmentLabel for i in range(1, 10)] == [
        ORGANS[i] for i in range(1, 10)
    ]
    uids = [ds.SOPInstanceUID for ds in datasets]
    got = seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False)
    for f, ds in enumerate(datasets):
        np.testing.assert_array_equal(got[f], _label(_pixel_ras(ds)), err_msg=f"image {f}")
    # each frame's own plane position says where its pixels are (what a viewer uses to overlay it)
    pix = seg.pixel_array
    shared = seg.SharedFunctionalGroupsSequence[0]
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        frame = Dataset()
        frame.ImagePositionPatient = item.PlanePositionSequence[0].ImagePositionPatient
        frame.ImageOrientationPatient = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        frame.PixelSpacing = shared.PixelMeasuresSequence[0].PixelSpacing
        frame.Rows, frame.Columns = seg.Rows, seg.Columns
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(pix[f].astype(bool), _label(_pixel_ras(frame)) == number)
    assert len(pix) == sum(
        int((got == i).any(axis=(1, 2)).sum()) for i in range(1, 10)
    )  # empty frames omitted


def test_finding_regions_reference_only_the_images_they_touch(tmp_path: Path) -> None:
    datasets = _series([1, 0, 0, 0, 1, 0], n=6, rows=8, cols=10, spacing=(1.0, 1.0), step=3.0)
    organs, affine = _canonical_grid(datasets)
    nodule = np.zeros(organs.shape, bool)
    nodule[2:5, 3:6, 1:3] = True  # two of the six slices
    write_segs(tmp_path, SourceSeries(tuple(datasets)), organs, {"Lung nodule": nodule}, affine, "test")
    seg = hd.seg.segread(tmp_path / FINDINGS_SEG)
    desc = seg.get_segment_description(1)
    assert desc.SegmentLabel == "Lung nodule"
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Nodule"  # SNOMED CT 27925004
    refs = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert len(refs) == 2 and len(seg.pixel_array) == 2
    assert int(seg.pixel_array.sum()) == int(nodule.sum())


def test_jpeg2000_segs_hold_the_same_pixels(tmp_path: Path) -> None:
    datasets = _series([0, 1, 0, -1, 0, 0], n=5, rows=40, cols=36, spacing=(0.7, 0.9), step=2.0)
    organs, affine = _canonical_grid(datasets)
    region = organs == 3
    for name, j2k in (("plain", False), ("j2k", True)):
        (tmp_path / name).mkdir()
        write_segs(
            tmp_path / name,
            SourceSeries(tuple(datasets)),
            organs,
            {"Atelectasis": region},
            affine,
            "t",
            jpeg2000=j2k,
        )
    uids = [ds.SOPInstanceUID for ds in datasets]
    for f in (ORGANS_SEG, FINDINGS_SEG):
        plain, j2k = (hd.seg.segread(tmp_path / n / f) for n in ("plain", "j2k"))
        assert j2k.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
        refs = [
            u
            for u in uids
            if u
            in {
                r.ReferencedSOPInstanceUID
                for r in plain.ReferencedSeriesSequence[0].ReferencedInstanceSequence
            }
        ]
        np.testing.assert_array_equal(
            j2k.get_pixels_by_source_instance(refs, combine_segments=True, relabel=False),
            plain.get_pixels_by_source_instance(refs, combine_segments=True, relabel=False),
        )
        assert not [ln for ln in _dciodvfy(tmp_path / "j2k" / f) if ln.startswith("Error")]


# ------------------------------------------------------------------ `exact infer` on DICOM series


def _with_uids(src: Path, dest: Path) -> Path:
    """A copy of the real series (which has empty UIDs) with study, series, SOP and frame UIDs set."""
    dest.mkdir(parents=True)
    study, series = generate_uid(entropy_srcs=["study"]), generate_uid(entropy_srcs=["series"])
    for p in sorted(src.iterdir()):
        ds = pydicom.dcmread(p)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[p.name])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.save_as(dest / p.name, enforce_file_format=True)
    return dest


def _synthetic_series(dest: Path) -> Path:
    from exact_ct.synth import render_study
    from exact_ct.synth.dicom import write_study_dicom

    files = write_study_dicom(render_study(3, seed=11), dest)
    return Path(files[0]).parent


def _infer(study: Path, model: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "infer",
            str(study),
            "--model",
            str(model),
            "--out",
            str(out),
            "--params",
            str(out) + ".none",
            *extra,
        ]
    )


@pytest.fixture(scope="module", params=["synthetic", "real"])
def inferred(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp(request.param)
    extra: tuple[str, ...] = ()
    if request.param == "real":  # 20 real 512 x 512 slices, JPEG 2000, UIDs added to a copy
        study = _with_uids(shared_data / REAL_SERIES, tmp / "series")
        extra = ("--dicom-jpeg2000",)  # its SEGs are read back and checked compressed
    else:
        study = _synthetic_series(tmp / "dicom")
    assert _infer(study, _package(tmp / "model"), tmp / "out", *extra) == 0
    return study, tmp / "out"


def _source(study: Path) -> tuple[list[str], list[Dataset], sitk.Image]:
    reader = sitk.ImageSeriesReader()
    files = list(reader.GetGDCMSeriesFileNames(str(study)))
    reader.SetFileNames(files)
    return files, [pydicom.dcmread(f, stop_before_pixels=True) for f in files], reader.Execute()


def _on_source(nifti_array: np.ndarray, like: Path, ref: sitk.Image) -> np.ndarray:
    """A canonical array resampled onto the source series by SimpleITK (nearest): (slice, row, column)."""
    img = sitk.ReadImage(str(like))  # ITK reads the NIfTI's RAS affine into LPS physical space
    arr = sitk.GetImageFromArray(np.ascontiguousarray(nifti_array.transpose(2, 1, 0)).astype(np.uint8))
    arr.CopyInformation(img)
    out = sitk.Resample(arr, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out)


def test_organ_seg_matches_the_organ_map_resampled_by_simpleitk(inferred: tuple[Path, Path]) -> None:
    study, out = inferred
    files, headers, ref = _source(study)
    seg = hd.seg.segread(out / "dicom" / ORGANS_SEG)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert [seg.get_segment_description(i).SegmentLabel for i in seg.get_segment_numbers()] == [
        ORGANS[i] for i in range(1, 10)
    ]
    lung = seg.get_segment_description(1).SegmentedPropertyTypeCodeSequence[0]
    assert (lung.CodeValue, lung.CodingSchemeDesignator) == ("39607008", "SCT")
    assert lung.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"
    body = seg.get_segment_description(9).SegmentedPropertyTypeCodeSequence[0]
    assert body.CodingSchemeDesignator == LOCAL_SCHEME
    # references: the source study, series, frame of reference and every source image
    assert seg.StudyInstanceUID == headers[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    (ref_series,) = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == headers[0].SeriesInstanceUID
    uids = [h.SOPInstanceUID for h in headers]
    assert {r.ReferencedSOPInstanceUID for r in ref_series.ReferencedInstanceSequence} == set(uids)
    # pixels: the organ map of the output folder put on the source slices by an independent resampler
    organs_img = nib.load(str(out / "organs.nii.gz"))
    expected = _on_source(np.asanyarray(organs_img.dataobj), out / "organs.nii.gz", ref)
    got = seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False)
    np.testing.assert_array_equal(got, expected)
    nonempty = sum(int((expected == i).any(axis=(1, 2)).sum()) for i in range(1, 10))
    assert int(seg.NumberOfFrames) == nonempty
    probs = json.loads((out / "probabilities.json").read_text())
    assert probs["dicom"]["written"] and probs["dicom"]["files"][ORGANS_SEG]["frames"] == nonempty
    j2k = "1.2.840.10008.1.2.4.90" if out.parent.name.startswith("real") else "1.2.840.10008.1.2.1"
    assert seg.file_meta.TransferSyntaxUID == j2k
    assert headers[0].SeriesInstanceUID not in (out / "probabilities.json").read_text()  # no UID leaks there


def test_findings_seg_holds_the_thresholded_confined_maps(inferred: tuple[Path, Path]) -> None:
    study, out = inferred
    files, headers, ref = _source(study)
    probs = json.loads((out / "probabilities.json").read_text())
    maps = np.asanyarray(nib.load(str(out / "anomaly_maps.nii.gz")).dataobj)
    expected_names = []
    for name in probs["positive"]:
        m = maps[..., ABNORMALITIES.index(name)]
        if ((m >= np.float32(probs["thresholds"][name])) & (m > 0)).any():
            expected_names.append(name)
    assert expected_names  # the test package calls every finding positive
    seg = hd.seg.segread(out / "dicom" / FINDINGS_SEG)
    labels = [seg.get_segment_description(i).SegmentLabel for i in seg.get_segment_numbers()]
    assert labels == expected_names
    referenced = {
        r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    for number, name in enumerate(labels, start=1):
        m = maps[..., ABNORMALITIES.index(name)]
        mask = ((m >= np.float32(probs["thresholds"][name])) & (m > 0)).astype(np.uint8)
        expected = _on_source(mask, out / "organs.nii.gz", ref)
        touched = [i for i, h in enumerate(headers) if expected[i].any()]
        assert {headers[i].SOPInstanceUID for i in touched} <= referenced
        got = seg.get_pixels_by_source_instance(
            [headers[i].SOPInstanceUID for i in touched], segment_numbers=[number], combine_segments=True
        )
        np.testing.assert_array_equal(got > 0, expected[touched] > 0, err_msg=name)


def test_sr_holds_the_grounded_report_and_only_the_source_patient_attributes(
    inferred: tuple[Path, Path],
) -> None:
    study, out = inferred
    _, headers, _ = _source(study)
    sr = pydicom.dcmread(out / "dicom" / REPORT_SR)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.ConceptNameCodeSequence[0].CodeValue == "18748-4"

    def texts(items: pydicom.Sequence) -> list[str]:
        found = []
        for it in items:
            if it.ValueType == "TEXT":
                found.append(str(it.TextValue))
            found += texts(it.get("ContentSequence", []))
        return found

    text = "\n".join(texts(sr.ContentSequence))
    report = (out / "report.md").read_text()
    for line in text.splitlines():
        if line.startswith("Generated by"):
            continue
        assert line in report
    assert "research use only" in text
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == headers[0].SeriesInstanceUID
    for path in (out / "dicom").iterdir():
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == headers[0].StudyInstanceUID
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber"):
            assert str(ds.get(kw, "") or "") in ("", str(headers[0].get(kw, "") or "")), (path.name, kw)
        for kw in ("InstitutionName", "InstitutionAddress", "OtherPatientIDs", "PatientAddress"):
            assert kw not in ds, (path.name, kw)


def _dciodvfy(path: Path | str) -> list[str]:
    if shutil.which("dciodvfy") is None:  # `make test` installs it (Makefile target system-tools)
        pytest.fail("dciodvfy not found: install the Debian package `dicom3tools`")
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return (res.stdout + res.stderr).splitlines()


def test_dciodvfy_finds_no_error(inferred: tuple[Path, Path]) -> None:
    study, out = inferred
    files, _, _ = _source(study)
    # warnings the source image itself raises (e.g. empty Patient ID, a vendor coding scheme) are inherited
    inherited = {ln for ln in _dciodvfy(files[0]) if ln.startswith("Warning")}
    for path in sorted((out / "dicom").iterdir()):
        lines = _dciodvfy(path)
        errors = [ln for ln in lines if ln.startswith("Error")]
        assert not errors, (path.name, errors)
        # besides those, the only warning allowed: dciodvfy does not know the local ("99") coding scheme
        warnings = [
            ln for ln in lines if ln.startswith("Warning") and LOCAL_SCHEME not in ln and ln not in inherited
        ]
        assert not warnings, (path.name, warnings)


def test_series_without_uids_is_reported_and_not_exported(tmp_path: Path, shared_data: Path) -> None:
    from exact_ct.evaluation.infer import run_infer

    res = run_infer(
        shared_data / REAL_SERIES, _package(tmp_path / "model"), tmp_path / "out", pseudo_masks=False
    )
    assert res.dicom is not None and not res.dicom["written"]
    assert "StudyInstanceUID" in res.dicom["reason"]
    assert not (tmp_path / "out" / "dicom").exists()
    assert json.loads((tmp_path / "out" / "probabilities.json").read_text())["dicom"] == res.dicom


def test_dicom_seg_flag_on_a_nifti_study_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "study.nii.gz"
    study.write_bytes(b"")
    assert _infer(study, tmp_path / "model", tmp_path / "out", "--dicom-seg") == 2
    assert "needs a DICOM series" in capsys.readouterr().err
