"""Write small synthetic CT DICOM series (for tests and benchmarks; real drops come from hospitals)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def chest_phantom(rows: int = 32, cols: int = 32, n: int = 12, seed: int = 0) -> np.ndarray:
    """A tiny chest-like HU volume (rows, cols, n): air, a soft-tissue body, two lungs, noise.

    Noise makes every slice distinct (real CT never repeats a slice bit for bit).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    body = ((yy - cy) / (0.45 * rows)) ** 2 + ((xx - cx) / (0.45 * cols)) ** 2 <= 1
    lung_l = ((yy - cy) / (0.3 * rows)) ** 2 + ((xx - cx - 0.2 * cols) / (0.13 * cols)) ** 2 <= 1
    lung_r = ((yy - cy) / (0.3 * rows)) ** 2 + ((xx - cx + 0.2 * cols) / (0.13 * cols)) ** 2 <= 1
    plane = np.where(body, 40.0, -1000.0)
    plane[lung_l | lung_r] = -850.0
    vol = np.empty((rows, cols, n), dtype=np.int16)
    for k in range(n):  # slice by slice, so that a 512x512x300 phantom stays within ~150 MB
        vol[:, :, k] = np.clip(np.rint(plane + rng.normal(0, 15, (rows, cols))), -1024, 3071)
    return vol


def write_series(
    folder: str | Path,
    hu: np.ndarray,
    *,
    pixel_spacing: tuple[float, float] = (0.8, 0.8),
    positions: Sequence[Sequence[float]] | None = None,
    slice_spacing: float = 2.0,
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (-100.0, -120.0, -50.0),
    study_uid: str | None = None,
    series_uid: str | None = None,
    accession: str = "ACC0001",
    patient_id: str = "PID0001",
    patient_name: str = "DOE^JANE",
    thickness: float | None = None,
    kernel: str = "STANDARD",
    body_part: str = "CHEST",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    intercept: float = -1024.0,
    slope: float = 1.0,
    modality: str | None = "CT",
    names: Sequence[str] | None = None,
    edit: Callable[[Dataset, int], None] | None = None,
) -> list[Path]:
    """Write ``hu`` (rows, cols, n) as one single-frame CT file per slice; returns the paths.

    Stored values are ``(hu - intercept) / slope`` as uint16. Slice k lies at ``positions[k]`` or at
    ``origin + k * slice_spacing * normal``. File names default to a shuffled order and instance
    numbers run backwards, so that readers relying on either get the order wrong.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, cols, n = hu.shape
    r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(r, c)
    if positions is None:
        positions = [np.asarray(origin, float) + k * slice_spacing * normal for k in range(n)]
    study_uid = study_uid if study_uid is not None else generate_uid(entropy_srcs=[accession, "study"])
    series_uid = (
        series_uid
        if series_uid is not None
        else generate_uid(entropy_srcs=[accession, kernel, str(n), str(thickness)])
    )
    order = np.random.default_rng(n).permutation(n)
    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        if modality is not None:
            ds.Modality = modality
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.AccessionNumber = accession
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.ImageType = list(image_type)
        ds.ConvolutionKernel = kernel
        ds.BodyPartExamined = body_part
        ds.SliceThickness = f"{thickness if thickness is not None else slice_spacing:g}"
        ds.InstanceNumber = n - k
        ds.ImagePositionPatient = [f"{v:.6g}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in iop]
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = f"{slope:g}"
        stored = np.rint((hu[:, :, k].astype(np.float64) - intercept) / slope)
        ds.PixelData = np.clip(stored, 0, 65535).astype("<u2").tobytes()
        if edit is not None:
            edit(ds, k)
        name = names[k] if names is not None else f"IM{order[k]:05d}"
        path = folder / name
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths
