"""Write a synthetic study as DICOM CT series (diagnostic thin series, optional thick recon and scout)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

from exact_ct.io import atomic_path
from exact_ct.synth.geometry import canonical_to_dicom_slice

if TYPE_CHECKING:
    from exact_ct.synth.study import SyntheticStudy

INTERCEPT = -1024.0  # stored values are unsigned 12-bit: HU = stored - 1024
AXIAL_IOP = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _ds(v: float) -> str:
    """Decimal String with at most 3 decimals (positions are rounded to that when the grid is made)."""
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _file_name(sop_uid: str, with_ext: bool) -> str:
    """Names from a hash of the SOP UID: stable, unique and not in slice order."""
    name = "IM" + hashlib.sha1(sop_uid.encode()).hexdigest()[:12].upper()
    return name + ".dcm" if with_ext else name


def _base(study: SyntheticStudy) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID = study.uid("study")
    ds.FrameOfReferenceUID = study.uid("frame")
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.PatientAge = f"{study.age:03d}Y"
    ds.AccessionNumber = study.accession_number
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesDate = study.study_date
    ds.ContentDate = study.study_date
    ds.AcquisitionDate = study.study_date
    ds.StudyID = f"{study.index + 1}"
    ds.StudyDescription = "CT CHEST WITH CONTRAST" if study.contrast else "CT CHEST WITHOUT CONTRAST"
    ds.Modality = "CT"
    ds.Manufacturer = "SYNTHETIC MEDICAL SYSTEMS"
    ds.ManufacturerModelName = "PHANTOMSCAN 128"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.KVP = "120"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = _ds(INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    if study.contrast:
        ds.ContrastBolusAgent = "IODINATED CONTRAST"
    return ds


def _write(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "EXACT_CT_SYNTH"
    ds.file_meta = meta
    with atomic_path(path) as tmp:
        dcmwrite(tmp, ds, enforce_file_format=True)


def _pixels(hu_2d: np.ndarray) -> bytes:
    stored = np.clip(np.rint(hu_2d.astype(np.float32) - INTERCEPT), 0, 4095).astype("<u2")
    return np.ascontiguousarray(stored).tobytes()


def write_study_dicom(study: SyntheticStudy, dicom_root: Path) -> list[Path]:
    """Write every series of ``study`` below ``dicom_root``; returns the files written."""
    rng = np.random.default_rng([study.seed, 4, study.index])
    plan = study.plan
    study_dir = (
        dicom_root
        / f"{study.patient_name.split('^')[0].title()}_{study.patient_id[-4:]}"
        / f"CT_{study.study_date}_{study.accession_number[-6:]}"
    )
    with_ext = bool(rng.random() < 0.5)

    def series_dir(number: int) -> Path:
        if plan.layout == "flat":
            return study_dir
        if plan.layout == "by_series":
            return study_dir / f"SE{number:04d}"
        return study_dir / f"{number}" / "DICOM"

    written: list[Path] = []
    hu = study.hu
    nx, ny, nz = hu.shape
    sx, sy, sz = study.grid.spacing
    positions = study.grid.lps_slice_positions()

    def axial_series(
        volume: np.ndarray,
        ipps: np.ndarray,
        thickness: float,
        spacing_z: float,
        number: int,
        kernel: str,
        description: str,
    ) -> None:
        uid = study.uid("series", str(number))
        order = np.arange(volume.shape[2])
        # scanners number head-first or feet-first; file names never follow slice order
        order = order[::-1] if plan.feet_first_numbering else order
        # one dataset per series, with only the per-slice elements changed per file (much faster)
        ds = _base(study)
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = number
        ds.SeriesDescription = description
        ds.SeriesTime = study.study_time
        ds.AcquisitionNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ConvolutionKernel = kernel
        ds.SliceThickness = _ds(thickness)
        ds.SpacingBetweenSlices = _ds(spacing_z)
        ds.ImageOrientationPatient = [_ds(v) for v in AXIAL_IOP]
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.Rows, ds.Columns = ny, nx
        ds.WindowCenter, ds.WindowWidth = ("-600", "1500") if "Lung" in description else ("40", "400")
        for inst, k in enumerate(order, start=1):
            ds.InstanceNumber = inst
            ds.SOPInstanceUID = study.uid("sop", str(number), str(int(k)))
            ds.ImagePositionPatient = [_ds(v) for v in ipps[k]]
            ds.SliceLocation = _ds(ipps[k][2])
            ds.PixelData = _pixels(canonical_to_dicom_slice(volume, int(k)))
            path = series_dir(number) / _file_name(ds.SOPInstanceUID, with_ext)
            _write(ds, path)
            written.append(path)

    if plan.scout:
        written.append(_scout(study, series_dir(1), with_ext))
    axial_series(hu, positions, sz, sz, 2, plan.main_kernel, f"Lung {sz:g} {plan.main_kernel}")
    if plan.thick_factor:
        f = plan.thick_factor
        n_slab = nz // f
        slabs = hu[:, :, : n_slab * f].astype(np.float32).reshape(nx, ny, n_slab, f).mean(axis=3)
        # soft-tissue kernel: smoother in-plane
        from scipy import ndimage

        slabs = ndimage.gaussian_filter(slabs, (0.7, 0.7, 0))
        ipp = positions[: n_slab * f].reshape(n_slab, f, 3).mean(axis=1).round(3)
        axial_series(
            slabs, ipp, sz * f, sz * f, 3, plan.thick_kernel, f"Mediastinum {sz * f:g} {plan.thick_kernel}"
        )
    return written


def _scout(study: SyntheticStudy, folder: Path, with_ext: bool) -> Path:
    """A frontal localizer: an attenuation projection through the patient (rows run feet-ward)."""
    hu = study.hu.astype(np.float32)
    mu = np.clip(hu + 1000.0, 0, None) / 1000.0
    proj = mu.sum(axis=1) * study.grid.spacing[1]  # (x, z) line integrals in mm of water
    img = -1000.0 + proj * 8.0
    # rows: superior -> inferior; columns: patient right -> left (LPS +x)
    pix = img[::-1, ::-1].T
    ds = _base(study)
    ds.SeriesInstanceUID = study.uid("series", "1")
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Topogram 0.6 T20f"
    ds.SeriesTime = study.study_time
    ds.InstanceNumber = 1
    ds.SOPInstanceUID = study.uid("sop", "1", "0")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ConvolutionKernel = "T20f"
    ds.SliceThickness = "0.6"
    nx, _, nz = study.hu.shape
    sx, _, sz = study.grid.spacing
    ox, oy, oz = study.grid.origin_ras
    top_z = oz + (nz - 1) * sz
    ds.ImagePositionPatient = [_ds(-(ox + (nx - 1) * sx)), "0", _ds(top_z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    ds.PixelSpacing = [_ds(sz), _ds(sx)]
    ds.Rows, ds.Columns = pix.shape
    ds.WindowCenter, ds.WindowWidth = "0", "2000"
    ds.PixelData = _pixels(pix)
    path = folder / _file_name(ds.SOPInstanceUID, with_ext)
    _write(ds, path)
    return path
