"""Read DICOM headers (never pixels) into small picklable records used for grouping and selection."""

from __future__ import annotations

import dataclasses
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
    #: text values of private (vendor) elements: scrubbed from report text as whole values only
    private_values: tuple[str, ...] = field(default=(), repr=False)
    #: completeness evidence (exact_ct.ingest.completeness); None when absent or not an integer
    instance_number: int | None = None
    images_in_acquisition: int | None = None


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return " ".join(str(v) for v in value).strip()
    return str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


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


_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "PN", "UC"})


def private_strings(ds: Dataset) -> tuple[str, ...]:
    """Text values of private elements (nested ones included), private creators left out.

    Only values of 8+ characters, mixing letters and digits, or of 6+ digits are kept: short words
    ("CHEST") or numbers ("120") in a vendor tag would otherwise erase findings from the report text.
    """
    found: set[str] = set()

    def visit(d: Dataset, elem: Any) -> None:
        if not elem.tag.is_private or elem.tag.is_private_creator or elem.VR not in _TEXT_VRS:
            return
        values = elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
        for v in values:
            text = str(v).strip() if v is not None else ""
            digits = sum(c.isdigit() for c in text)
            letters = sum(c.isalpha() for c in text)
            if len(text) >= 8 or (len(text) >= 3 and digits and letters) or digits >= 6:
                found.add(text)

    try:
        ds.walk(visit)
    except Exception:  # an undecodable private element must not fail the file
        pass
    return tuple(sorted(found))


def read_header(path: str, rel: str, cfg: IngestConfig) -> FileHeader | FileOutcome:
    """Parse one file's header (stop_before_pixels) and classify it.

    Returns a FileHeader for a CT image with usable geometry, otherwise a FileOutcome that names
    the skip reason or the quarantine rule (carrying the header's identifying values, so that the
    file's path can be scrubbed of them too).
    """
    ds = _parse(path, rel, cfg)
    if isinstance(ds, FileOutcome):
        return ds
    result = _classify(ds, path, rel, cfg)
    if isinstance(result, FileOutcome):
        return dataclasses.replace(result, identifiers=identifying_strings(ds))
    return result


def _parse(path: str, rel: str, cfg: IngestConfig) -> Dataset | FileOutcome:
    too_big = _size_failure(path, rel, cfg)
    if too_big is not None:
        return too_big
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
    return ds


def _classify(ds: Dataset, path: str, rel: str, cfg: IngestConfig) -> FileHeader | FileOutcome:
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
    elif modality != "CT":  # the message names the rule, never the header's value
        return FileOutcome(rel, "quarantined", "not_ct", "Modality is not CT")

    image_type = tuple(str(v).upper() for v in (ds.get("ImageType") or ()))
    description = _str(ds, "SeriesDescription").upper()
    if any(k in image_type or k in description for k in cfg.localizer_keywords):
        return FileOutcome(rel, "skipped", "localizer", "scout/localizer image")
    if _str(ds, "BurnedInAnnotation").upper() == "YES":
        if not cfg.allow_burned_in_annotation:
            return FileOutcome(
                rel,
                "quarantined",
                "burned_in_annotation",
                "BurnedInAnnotation is YES: identifying text may be drawn into the pixels "
                "(allow_burned_in_annotation=false)",
            )
        flags.append("burned_in_annotation")

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
            f"no installed decoder for transfer syntax {_ts_name(ts)}; install the matching pylibjpeg plug-in",
        )

    multiframe = "PerFrameFunctionalGroupsSequence" in ds
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows * cols > cfg.max_image_pixels:  # before anything sized by the header is allocated
        return FileOutcome(
            rel,
            "quarantined",
            "oversized_image",
            f"{rows} x {cols} pixels per image, above max_image_pixels={cfg.max_image_pixels}",
        )
    n_frames = int(ds.get("NumberOfFrames") or 1) if multiframe else 1
    if n_frames * rows * cols > cfg.max_volume_voxels:
        return FileOutcome(
            rel,
            "quarantined",
            "oversized_image",
            f"{n_frames} frames of {rows} x {cols}, above max_volume_voxels={cfg.max_volume_voxels}",
        )
    try:
        geometry = _multiframe_geometry(ds) if multiframe else _single_geometry(ds)
    except RescaleError as e:
        return FileOutcome(rel, "quarantined", "invalid_rescale", str(e))
    except ValueError as e:
        return FileOutcome(rel, "quarantined", "missing_geometry", str(e))
    iop, pixel_spacing, thickness, frames = geometry
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
        private_values=private_strings(ds),
        instance_number=_int(ds, "InstanceNumber"),
        images_in_acquisition=_int(ds, "ImagesInAcquisition"),
    )


class RescaleError(ValueError):
    """RescaleSlope / RescaleIntercept present but unusable (rule invalid_rescale)."""


def _rescale(src: Dataset, where: str = "") -> tuple[float, float]:
    """(slope, intercept); an absent element takes the identity value (1, 0), a present one must be a
    finite number (and the slope non-zero): a NaN slope must never silently become 1.0."""
    out = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        if keyword not in src:
            out.append(default)
            continue
        try:
            raw = src[keyword].value
            value = float(raw[0] if isinstance(raw, pydicom.multival.MultiValue) else raw)
        except (TypeError, ValueError, IndexError):
            value = math.nan
        if not math.isfinite(value) or (keyword == "RescaleSlope" and value == 0.0):
            raise RescaleError(f"{where}{keyword} is empty, not a finite number, or zero")
        out.append(value)
    return out[0], out[1]


def _ts_name(ts: str) -> str:
    """A transfer syntax's registered name, or 'not registered' (never an arbitrary header string)."""
    uid = pydicom.uid.UID(ts)
    return f"{uid.name} ({ts})" if uid.is_transfer_syntax else "(an unregistered UID)"


def _size_failure(path: str, rel: str, cfg: IngestConfig) -> FileOutcome | None:
    """oversized_file for a file above max_file_mb, or a deflated DICOM that inflates beyond it
    (pydicom inflates the whole dataset in memory, even for a header-only read)."""
    import zlib

    cap = int(cfg.max_file_mb * 1024 * 1024)
    try:
        size = Path(path).stat().st_size
    except OSError:
        return None  # dcmread reports the file as unreadable
    if size > cap:
        return FileOutcome(
            rel,
            "quarantined",
            "oversized_file",
            f"{size / 2**20:.0f} MB, above max_file_mb={cfg.max_file_mb:g}",
        )
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:
        return None
    if str(meta.get("TransferSyntaxUID", "")) != pydicom.uid.DeflatedExplicitVRLittleEndian:
        return None
    group_length = int(meta.get("FileMetaInformationGroupLength", 0) or 0)
    with open(path, "rb") as f:
        head = f.read(132)
        if head[128:132] != b"DICM" or group_length <= 0:
            return None
        f.seek(132 + 12 + group_length)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflated = 0
        while chunk := f.read(1 << 20):
            while chunk:
                inflated += len(inflater.decompress(chunk, 1 << 24))
                chunk = inflater.unconsumed_tail
                if inflated > cap:
                    return FileOutcome(
                        rel,
                        "quarantined",
                        "oversized_file",
                        f"deflated file inflates beyond max_file_mb={cfg.max_file_mb:g} (compressed {size} bytes)",
                    )
    return None


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
    slope, intercept = _rescale(ds)
    frame = FrameGeometry((ipp[0], ipp[1], ipp[2]), slope, intercept)
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
        slope, intercept = _rescale(transform if transform is not None else ds, f"frame {i + 1}: ")
        frames.append(FrameGeometry((ipp[0], ipp[1], ipp[2]), slope, intercept))
    if iop0 is None or ps0 is None:
        raise ValueError("no frames")
    return iop0, (ps0[0], ps0[1]), thickness, tuple(frames)


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")
