"""Read DICOM headers (never pixels) into small picklable records used for grouping and selection."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from exact_ct.ingest.config import IngestConfig
from exact_ct.ingest.qc import FileOutcome

CT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    }
)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"

#: Keywords whose values identify a person, place or record; collected (anywhere in the header,
#: nested sequences included) only to scrub them from report text. They are never written out.
_IDENTIFYING_KEYWORDS = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "AccessionNumber",
        "StudyID",
        "PatientBirthDate",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "MedicalRecordLocator",
        "StationName",
    }
)


@dataclass(frozen=True)
class FrameGeometry:
    """Position and rescale of one 2D image (a single-frame file, or one frame of a multi-frame file)."""

    ipp: tuple[float, float, float]
    slope: float
    intercept: float


@dataclass(frozen=True)
class FileHeader:
    """What ingest needs from one DICOM file's header. Identifiers stay in the main process."""

    path: str
    rel: str
    transfer_syntax: str
    study_uid: str
    series_uid: str
    accession: str
    patient_id: str
    image_type: tuple[str, ...]
    kernel: str
    body_part: str
    thickness: float | None
    iop: tuple[float, ...]
    pixel_spacing: tuple[float, float]  # (between rows, between columns) as in DICOM
    rows: int
    cols: int
    frames: tuple[FrameGeometry, ...]
    multiframe: bool
    flags: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = field(default=(), repr=False)


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return " ".join(str(v) for v in value).strip()
    return str(value).strip()


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(out) != n or not all(math.isfinite(v) for v in out):
        return None
    return out


def _group_item(ds: Dataset, frame_item: Dataset | None, seq: str) -> Dataset | None:
    """A functional-group macro for one frame: the per-frame item wins over the shared one."""
    for holder in (frame_item, _first(ds, "SharedFunctionalGroupsSequence")):
        if holder is not None and seq in holder and len(holder[seq].value) > 0:
            return holder[seq].value[0]
    return None


def _first(ds: Dataset, seq: str) -> Dataset | None:
    if seq in ds and len(ds[seq].value) > 0:
        return ds[seq].value[0]
    return None


def identifying_strings(ds: Dataset) -> tuple[str, ...]:
    """Every person name and identifying value in the header, nested sequences included."""
    found: set[str] = set()

    def visit(d: Dataset, elem: Any) -> None:
        if elem.VR == "PN" or elem.keyword in _IDENTIFYING_KEYWORDS:
            values = (
                elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
            )
            for v in values:
                text = str(v).strip() if v is not None else ""
                if text:
                    found.add(text)

    ds.walk(visit)
    return tuple(sorted(found))


def read_header(path: str, rel: str, cfg: IngestConfig) -> FileHeader | FileOutcome:
    """Parse one file's header (stop_before_pixels) and classify it.

    Returns a FileHeader for a CT image with usable geometry, otherwise a FileOutcome that names
    the skip reason or the quarantine rule.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        # Some exporters omit the 128-byte preamble; accept such files only if they parse as images.
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            return FileOutcome(rel, "quarantined", "unreadable_file", "not a DICOM or NIfTI file")
        if "SOPClassUID" not in ds and "Rows" not in ds:
            return FileOutcome(rel, "quarantined", "unreadable_file", "not a DICOM or NIfTI file")
    except Exception as e:  # truncated or corrupt headers raise many different errors
        return FileOutcome(
            rel, "quarantined", "unreadable_file", f"DICOM header cannot be parsed ({type(e).__name__})"
        )

    meta = getattr(ds, "file_meta", None)
    sop_class = _str(ds, "SOPClassUID") or (_str(meta, "MediaStorageSOPClassUID") if meta is not None else "")
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return FileOutcome(rel, "skipped", "dicomdir", "DICOMDIR index file")

    flags: list[str] = []
    modality = _str(ds, "Modality").upper()
    if not modality:
        if sop_class in CT_SOP_CLASSES:
            flags.append("modality_inferred")
        else:
            return FileOutcome(
                rel, "quarantined", "not_ct", "Modality tag missing and SOP class is not a CT image"
            )
    elif modality != "CT":
        return FileOutcome(rel, "quarantined", "not_ct", f"Modality is {modality[:16]}, not CT")

    image_type = tuple(str(v).upper() for v in (ds.get("ImageType") or ()))
    description = _str(ds, "SeriesDescription").upper()
    if any(k in image_type or k in description for k in cfg.localizer_keywords):
        return FileOutcome(rel, "skipped", "localizer", "scout/localizer image")

    ts = str(meta.get("TransferSyntaxUID", IMPLICIT_VR_LE)) if meta is not None else IMPLICIT_VR_LE
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(pydicom.uid.UID(ts)).is_available
    except Exception:
        available = False
    if not available:
        return FileOutcome(
            rel,
            "quarantined",
            "unsupported_transfer_syntax",
            f"no installed decoder for transfer syntax {ts[:64]}; install the matching pylibjpeg plug-in",
        )

    multiframe = "PerFrameFunctionalGroupsSequence" in ds
    try:
        geometry = _multiframe_geometry(ds) if multiframe else _single_geometry(ds)
    except ValueError as e:
        return FileOutcome(rel, "quarantined", "missing_geometry", str(e))
    iop, pixel_spacing, thickness, frames = geometry
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows < 1 or cols < 1:
        return FileOutcome(rel, "quarantined", "missing_geometry", "Rows/Columns missing")

    kernel = _str(ds, "ConvolutionKernel")
    if not kernel and multiframe:
        rec = _group_item(ds, None, "CTReconstructionSequence")
        kernel = _str(rec, "ConvolutionKernel") if rec is not None else ""
    return FileHeader(
        path=path,
        rel=rel,
        transfer_syntax=ts,
        study_uid=_str(ds, "StudyInstanceUID"),
        series_uid=_str(ds, "SeriesInstanceUID"),
        accession=_str(ds, "AccessionNumber"),
        patient_id=_str(ds, "PatientID"),
        image_type=image_type,
        kernel=kernel,
        body_part=_str(ds, "BodyPartExamined").upper().replace(" ", "").replace("_", ""),
        thickness=thickness,
        iop=iop,
        pixel_spacing=pixel_spacing,
        rows=rows,
        cols=cols,
        frames=frames,
        multiframe=multiframe,
        flags=tuple(flags),
        identifiers=identifying_strings(ds),
    )


def _thickness(ds: Dataset | None) -> float | None:
    if ds is None:
        return None
    v = _floats([ds.get("SliceThickness")], 1) if ds.get("SliceThickness") not in (None, "") else None
    return v[0] if v else None


def _single_geometry(
    ds: Dataset,
) -> tuple[tuple[float, ...], tuple[float, float], float | None, tuple[FrameGeometry, ...]]:
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    ipp = _floats(ds.get("ImagePositionPatient"), 3)
    ps = _floats(ds.get("PixelSpacing"), 2)
    missing = [
        n
        for n, v in (("ImageOrientationPatient", iop), ("ImagePositionPatient", ipp), ("PixelSpacing", ps))
        if v is None
    ]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing or malformed")
    assert iop is not None and ipp is not None and ps is not None
    slope = _floats([ds.get("RescaleSlope", 1)], 1) or (1.0,)
    intercept = _floats([ds.get("RescaleIntercept", 0)], 1) or (0.0,)
    frame = FrameGeometry((ipp[0], ipp[1], ipp[2]), slope[0], intercept[0])
    return iop, (ps[0], ps[1]), _thickness(ds), (frame,)


def _multiframe_geometry(
    ds: Dataset,
) -> tuple[tuple[float, ...], tuple[float, float], float | None, tuple[FrameGeometry, ...]]:
    """Enhanced CT: geometry lives in Per-frame / Shared Functional Groups, one macro per frame."""
    per_frame = ds.PerFrameFunctionalGroupsSequence
    n = int(ds.get("NumberOfFrames") or len(per_frame))
    if len(per_frame) != n:
        raise ValueError(f"{len(per_frame)} per-frame functional groups for {n} frames")
    iop0: tuple[float, ...] | None = None
    ps0: tuple[float, ...] | None = None
    thickness: float | None = None
    frames = []
    for i, item in enumerate(per_frame):
        orient = _group_item(ds, item, "PlaneOrientationSequence")
        pos = _group_item(ds, item, "PlanePositionSequence")
        measures = _group_item(ds, item, "PixelMeasuresSequence")
        transform = _group_item(ds, item, "PixelValueTransformationSequence")
        iop = _floats(orient.get("ImageOrientationPatient") if orient is not None else None, 6)
        ipp = _floats(pos.get("ImagePositionPatient") if pos is not None else None, 3)
        ps = _floats(measures.get("PixelSpacing") if measures is not None else None, 2)
        if iop is None or ipp is None or ps is None:
            raise ValueError(f"frame {i + 1}: plane orientation, position or pixel spacing missing")
        if iop0 is None:
            iop0, ps0, thickness = iop, ps, _thickness(measures)
        elif max(abs(a - b) for a, b in zip(iop, iop0, strict=True)) > 1e-4 or ps != ps0:
            raise ValueError(f"frame {i + 1}: orientation or pixel spacing differs from frame 1")
        src = transform if transform is not None else ds
        slope = _floats([src.get("RescaleSlope", 1)], 1) or (1.0,)
        intercept = _floats([src.get("RescaleIntercept", 0)], 1) or (0.0,)
        frames.append(FrameGeometry((ipp[0], ipp[1], ipp[2]), slope[0], intercept[0]))
    if iop0 is None or ps0 is None:
        raise ValueError("no frames")
    return iop0, (ps0[0], ps0[1]), thickness, tuple(frames)


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")
