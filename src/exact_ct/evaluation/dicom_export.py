"""DICOM outputs of `exact infer` for a PACS: SEG objects on the source slices and a Comprehensive SR.

When the input study is a DICOM series, `exact infer` also writes (folder ``dicom/`` of its output):

* ``organs_seg.dcm``: a BINARY Segmentation with one segment per organ id 1-9 of
  :data:`exact_ct.schema.ORGANS` (segment number = organ id), SNOMED CT codes where pydicom's code
  dictionary has the concept, else the local coding scheme :data:`LOCAL_SCHEME`;
* ``findings_seg.dcm``: a BINARY Segmentation with one segment per positive finding (probability at or
  above its threshold) whose thresholded region is non-empty: the voxels of its organ-confined anomaly
  map at or above the package's threshold for that finding (written only when there is such a finding);
* ``report_sr.dcm``: a Comprehensive SR (TID 2000 layout: Findings and Impressions sections of TEXT
  items) holding the grounded report's sentences, which every PACS SR viewer shows as text.

All three belong to the source study and reference the source series (its SOP instances and frame of
reference). The maps live on the canonical RAS+ grid of the ingested volume; the SEG frames are built on
each source slice's own pixel grid (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) by
nearest-neighbour look-up, so they overlay the source images exactly whatever the slice order or in-plane
orientation of the series.

Privacy: the objects carry the patient and study attributes of the source series (DICOM requires them
for a PACS to file the objects with the study) and nothing else about the patient; the SR text is the
grounded report, which is generated from templates and holds no identifier.

UIDs are derived from the source series UID, the model version and the content, so a rerun of the same
model on the same series yields the same UIDs (a PACS files it as the same objects).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exact_ct.schema import ABNORMALITIES, ORGAN_COLOURS, ORGANS

log = logging.getLogger(__name__)

#: Coding scheme of the concepts pydicom's SNOMED CT dictionary does not hold (DICOM private schemes
#: start with "99").
LOCAL_SCHEME = "99EXACTCT"
#: Series numbers of the exported objects (chosen high to stay clear of scanner series).
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
MANUFACTURER = "EXACT-CT"
#: Output file names inside the ``dicom/`` folder.
ORGANS_SEG = "organs_seg.dcm"
FINDINGS_SEG = "findings_seg.dcm"
REPORT_SR = "report_sr.dcm"

#: organ name -> (SNOMED CT keyword in pydicom's dictionary, laterality modifier keyword or "").
_ORGAN_SCT: Mapping[str, tuple[str, str]] = {
    "lung_left": ("Lung", "Left"),
    "lung_right": ("Lung", "Right"),
    "airway": ("AirwayStructure", ""),
    "pleura": ("Pleura", ""),
    "heart": ("Heart", ""),
    "aorta": ("Aorta", ""),
    "esophagus": ("Esophagus", ""),
    "mediastinum": ("Mediastinum", ""),
}
#: abnormality -> (SNOMED CT keyword, anatomic region keyword or ""); the others get local codes.
_FINDING_SCT: Mapping[str, tuple[str, str]] = {
    "Cardiomegaly": ("Cardiomegaly", "Heart"),
    "Pericardial effusion": ("PericardialEffusion", "Heart"),
    "Lymphadenopathy": ("Lymphadenopathy", "Mediastinum"),
    "Pleural effusion": ("PleuralEffusion", "Pleura"),
    "Lung nodule": ("Nodule", "Lung"),
}


class ExportSkipped(RuntimeError):
    """The study cannot be exported as DICOM (the message says why); the other outputs are unaffected."""


@dataclass(frozen=True)
class SourceSeries:
    """Header datasets (no pixel data) of the series ingest selected, one per single-frame image."""

    datasets: tuple[Any, ...]

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    @property
    def sop_uids(self) -> tuple[str, ...]:
        return tuple(str(ds.SOPInstanceUID) for ds in self.datasets)


def find_source_series(drop: Path, series_uid_hash: str, cfg: Any) -> SourceSeries:
    """The series of ``drop`` that ingest assembled, identified by its manifest ``series_uid_hash``.

    Headers are read and grouped exactly as ingest does (same classification, same series key, same
    keyed hash), so a study with several series (thin and thick reconstructions, a scout) maps back to
    the one the maps were computed on. Raises ExportSkipped when the series cannot be referenced.
    """
    import os

    import pydicom

    from exact_ct.ingest.headers import FileHeader, read_header
    from exact_ct.ingest.pipeline import series_key
    from exact_ct.privacy import pseudonym_key, pseudonymise

    key = pseudonym_key()
    members: list[FileHeader] = []
    for root, _dirs, names in os.walk(drop):
        for name in sorted(names):
            p = Path(root) / name
            h = read_header(str(p), p.relative_to(drop).as_posix(), cfg)
            if isinstance(h, FileHeader) and pseudonymise(repr(series_key(h)), key, prefix="se-") == (
                series_uid_hash
            ):
                members.append(h)
    if not members:
        raise ExportSkipped("the selected series was not found among the input files")
    if any(h.multiframe for h in members):
        raise ExportSkipped("multi-frame source images: the DICOM export supports single-frame series")
    datasets = []
    for h in sorted(members, key=lambda h: h.rel):
        ds = pydicom.dcmread(h.path, stop_before_pixels=True)
        for kw in (
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "SOPClassUID",
            "FrameOfReferenceUID",
        ):
            if not str(ds.get(kw, "") or "").strip():
                raise ExportSkipped(f"source images have no {kw}: a DICOM object cannot reference them")
        datasets.append(ds)
    if len({str(ds.SOPInstanceUID) for ds in datasets}) != len(datasets):
        raise ExportSkipped("source images share SOP Instance UIDs")
    return SourceSeries(tuple(datasets))


def _frame_axes(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS mm of pixel (0, 0) and the RAS step per column index and per row index of one image."""
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    # DICOM: pixel (row r, column c) lies at IPP + c * col_spacing * iop[:3] + r * row_spacing * iop[3:]
    return ipp * lps_to_ras, iop[:3] * col_spacing * lps_to_ras, iop[3:] * row_spacing * lps_to_ras


def frame_indices(
    ds: Any, affine: np.ndarray, shape: Sequence[int]
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, float]:
    """Nearest voxel (i, j, k) of the canonical grid for every pixel (row, column) of one source image.

    Returns the three (rows, columns) index arrays, the mask of pixels inside the volume, and the
    largest distance (in voxels) from a pixel centre to its nearest voxel centre (0 when the canonical
    grid is, as ingest makes it, a permutation of the source grid).
    """
    origin, per_col, per_row = _frame_axes(ds)
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    b, m = inv[:3, 3], inv[:3, :3]
    o, u, v = m @ origin + b, m @ per_col, m @ per_row
    rows, cols = int(ds.Rows), int(ds.Columns)
    r = np.arange(rows, dtype=np.float64)[:, None]
    c = np.arange(cols, dtype=np.float64)[None, :]
    idx = [o[a] + c * u[a] + r * v[a] for a in range(3)]
    near = [np.rint(x) for x in idx]
    offset = float(max(np.abs(x - n).max() for x, n in zip(idx, near, strict=True)))
    inside = np.ones((rows, cols), dtype=bool)
    ints = []
    for n, size in zip(near, shape, strict=True):
        inside &= (n >= 0) & (n <= size - 1)
        ints.append(np.clip(n, 0, size - 1).astype(np.intp))
    return (ints[0], ints[1], ints[2]), inside, offset


def to_source_frames(
    volumes: Sequence[np.ndarray], affine: np.ndarray, series: SourceSeries
) -> tuple[list[np.ndarray], float]:
    """Each canonical (x, y, z) volume sampled on every source image: (frames, rows, columns) arrays.

    Pixels outside the canonical volume get 0. Also returns the largest pixel-to-voxel offset in voxels.
    """
    shape = volumes[0].shape[:3]
    first = series.datasets[0]
    out = [np.zeros((len(series.datasets), int(first.Rows), int(first.Columns)), v.dtype) for v in volumes]
    worst = 0.0
    for f, ds in enumerate(series.datasets):
        (i, j, k), inside, offset = frame_indices(ds, affine, shape)
        worst = max(worst, offset)
        for vol, dest in zip(volumes, out, strict=True):
            dest[f] = np.where(inside, vol[i, j, k], 0)
    return out, worst


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=list(parts)))


def _code(keyword: str) -> Any:
    from pydicom.sr.codedict import codes

    return getattr(codes.SCT, keyword)


def _local(value: str, meaning: str) -> Any:
    from pydicom.sr.coding import Code

    return Code(value, LOCAL_SCHEME, meaning[:64])


def _algorithm(version: str) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name="EXACT-CT", family=codes.cid7162.ArtificialIntelligence, version=version or "unversioned"
    )


def _colour(hex_colour: str) -> Any:
    import highdicom as hd

    return hd.color.CIELabColor.from_string(hex_colour)


def organ_segments(version: str, series_uid: str = "") -> list[Any]:
    """Segment descriptions of organ ids 1-9 (segment number = organ id).

    Tracking UIDs are derived from the source series UID and the organ name (one per organ and series).
    """
    import highdicom as hd

    out = []
    for oid in sorted(ORGANS):
        if oid == 0:
            continue
        name = ORGANS[oid]
        if name in _ORGAN_SCT:
            kw, side = _ORGAN_SCT[name]
            prop = _code(kw)
            regions = [_code(side)] if side else None
        else:
            prop, regions = _local(f"organ-{name}", f"{name.replace('_', ' ')} (EXACT-CT organ label)"), None
        desc = hd.seg.SegmentDescription(
            segment_number=oid,
            segment_label=name,
            segmented_property_category=_code("AnatomicalStructure"),
            segmented_property_type=prop,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_algorithm(version),
            tracking_uid=_uid("exact-ct", "organ", series_uid, name),
            tracking_id=f"organ {name}",
            display_color=_colour(ORGAN_COLOURS[oid]),
        )
        if regions:  # laterality of the lung segments, nested in the property type item
            mod = hd.sr.CodedConcept.from_code(regions[0])
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [mod]
        out.append(desc)
    return out


def finding_segment(number: int, name: str, version: str, series_uid: str = "") -> Any:
    import highdicom as hd

    if name in _FINDING_SCT:
        kw, region = _FINDING_SCT[name]
        prop, regions = _code(kw), [_code(region)]
    else:
        slug = name.lower().replace(" ", "-")
        prop, regions = _local(f"finding-{slug}", f"{name} (CT-RATE finding)"), None
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=_code("MorphologicallyAbnormalStructure"),
        segmented_property_type=prop,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(version),
        tracking_uid=_uid("exact-ct", "finding", series_uid, name),
        tracking_id=f"finding {name}",
        anatomic_regions=regions,
    )


def finding_masks(
    confined_maps: np.ndarray, thresholds: Mapping[str, float], positives: Sequence[str]
) -> dict[str, np.ndarray]:
    """Thresholded region of each positive finding on the canonical grid (empty regions left out).

    A voxel belongs to the region when its organ-confined map value is at or above the finding's
    threshold and above zero (the maps are exactly zero outside their confinement region).
    """
    out: dict[str, np.ndarray] = {}
    for name in positives:
        # float32: the precision anomaly_maps.nii.gz stores, so the region can be recomputed from the file
        m = np.asarray(confined_maps[..., ABNORMALITIES.index(name)], dtype=np.float32)
        region = (m >= np.float32(thresholds[name])) & (m > 0)
        if region.any():
            out[name] = region
    return out


def _declare_local_scheme(ds: Any) -> None:
    """Name the local coding scheme in the Coding Scheme Identification Sequence (SOP Common module)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodingSchemeName = "EXACT-CT organ labels and CT-RATE findings"
    item.CodingSchemeResponsibleOrganization = "EXACT-CT"
    seq = list(ds.get("CodingSchemeIdentificationSequence", []))
    ds.CodingSchemeIdentificationSequence = [*seq, item]


def _save(ds: Any, path: Path, *, local_codes: bool = False) -> None:
    """Write a DICOM object atomically (a reader never sees half a file), naming the local coding scheme
    first when its codes use it."""
    from exact_ct.io import atomic_path

    if local_codes:
        _declare_local_scheme(ds)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _content_hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _seg(
    series: SourceSeries,
    images: Sequence[Any],
    pixels: np.ndarray,
    segments: list[Any],
    *,
    seg_series_uid: str,
    instance: int,
    label: str,
    description: str,
    version: str,
    jpeg2000: bool = False,
) -> Any:
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

    return hd.seg.Segmentation(
        source_images=list(images),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=seg_series_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=_uid("exact-ct", "seg", series.series_uid, version, label, _content_hash(pixels)),
        instance_number=instance,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="EXACT-CT anomaly model",
        software_versions=version or "unversioned",
        device_serial_number="none",
        content_label=label,
        content_description=description,
        series_description="EXACT-CT organs and findings (research use)",
        # the JPEG 2000 codec refuses images under 32 pixels along both axes: those stay uncompressed
        transfer_syntax_uid=JPEG2000Lossless
        if jpeg2000 and max(pixels.shape[1:3]) >= 32
        else ExplicitVRLittleEndian,
    )


def write_segs(
    out: Path,
    series: SourceSeries,
    organs: np.ndarray,
    findings: Mapping[str, np.ndarray],
    affine: np.ndarray,
    version: str,
    jpeg2000: bool = False,
) -> dict[str, Any]:
    """Write organs_seg.dcm (and findings_seg.dcm when ``findings`` is non-empty) into ``out``.

    ``jpeg2000``: store the frames JPEG 2000 lossless (about 25 times smaller than the default Explicit VR
    Little Endian at 1 bit per pixel, which every SEG reader handles; not every one decodes JPEG 2000).
    """
    names = list(findings)
    vols = [np.asarray(organs, dtype=np.uint8), *[findings[n].astype(np.uint8) for n in names]]
    frames, offset = to_source_frames(vols, affine, series)
    if offset > 0.25:
        raise ExportSkipped(
            f"source images are {offset:.2f} voxels off the ingested grid: not the series the maps came from"
        )
    seg_series_uid = _uid("exact-ct", "seg-series", series.series_uid, version)
    written: dict[str, Any] = {}
    organ_frames = frames[0]
    seg = _seg(
        series,
        series.datasets,
        organ_frames,
        organ_segments(version, series.series_uid),
        seg_series_uid=seg_series_uid,
        instance=1,
        label="EXACT_ORGANS",
        description="EXACT-CT organ map",
        version=version,
        jpeg2000=jpeg2000,
    )
    _save(seg, out / ORGANS_SEG, local_codes=True)
    written[ORGANS_SEG] = {
        "segments": [ORGANS[i] for i in sorted(ORGANS) if i],
        "frames": int(seg.NumberOfFrames),
    }
    # a region that no source pixel samples (it cannot happen on ingest's grid) gets no segment
    found = [(n, f) for n, f in zip(names, frames[1:], strict=True) if f.any()]
    names = [n for n, _ in found]
    if names:
        keep = np.flatnonzero(
            np.any([f.any(axis=(1, 2)) for _, f in found], axis=0)
        )  # images a region touches
        stack = np.stack([f[keep] > 0 for _, f in found], axis=-1)  # (images, rows, columns, findings)
        images = [series.datasets[i] for i in keep]
        segs = [finding_segment(n + 1, name, version, series.series_uid) for n, name in enumerate(names)]
        seg2 = _seg(
            series,
            images,
            stack,
            segs,
            seg_series_uid=seg_series_uid,
            instance=2,
            label="EXACT_FINDINGS",
            description="EXACT-CT thresholded anomaly regions of the positive findings",
            version=version,
            jpeg2000=jpeg2000,
        )
        _save(seg2, out / FINDINGS_SEG, local_codes=True)
        written[FINDINGS_SEG] = {"segments": names, "frames": int(seg2.NumberOfFrames)}
    return {"files": written, "max_offset_voxels": round(offset, 4)}


def write_sr(out: Path, series: SourceSeries, report: Any, version: str) -> dict[str, Any]:
    """Write report_sr.dcm: the grounded report as a Comprehensive SR (Findings / Impressions sections)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from exact_ct.evaluation import grounded

    rel = hd.sr.RelationshipTypeValues.CONTAINS
    findings = [hd.sr.TextContentItem(codes.DCM.Finding, grounded.sentence(f), rel) for f in report.findings]
    findings += [
        hd.sr.TextContentItem(codes.DCM.Finding, grounded.negative_sentence(n), rel) for n in report.absent
    ]
    if not findings:
        findings = [hd.sr.TextContentItem(codes.DCM.Finding, "No finding above threshold.", rel)]
    impression = report.text.split("IMPRESSION:", 1)[-1].strip() or "No finding above threshold."
    root = hd.sr.ContainerContentItem(
        name=codes.LN.DiagnosticImagingReport,
        template_id="2000",
    )
    root.ContentSequence = [  # type: ignore[assignment]  # pydicom accepts a list of items
        hd.sr.TextContentItem(
            codes.DCM.Comment,
            f"Generated by EXACT-CT model {version or 'unversioned'} from its anomaly maps by fixed "
            "templates; research use only, not a diagnosis.",
            rel,
        ),
        hd.sr.ContainerContentItem(name=codes.DCM.Findings, relationship_type=rel),
        hd.sr.ContainerContentItem(name=codes.DCM.Impressions, relationship_type=rel),
    ]
    root.ContentSequence[1].ContentSequence = findings
    root.ContentSequence[2].ContentSequence = [hd.sr.TextContentItem(codes.DCM.Impression, impression, rel)]
    sr = hd.sr.ComprehensiveSR(
        evidence=list(series.datasets),
        content=root,
        series_instance_uid=_uid("exact-ct", "sr-series", series.series_uid, version),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid("exact-ct", "sr", series.series_uid, version, report.text),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description="EXACT-CT grounded report (research use)",
    )
    _save(sr, out / REPORT_SR)
    return {"findings": len(report.findings), "stated_absent": len(report.absent)}


def export_dicom(
    out_dir: Path,
    series: SourceSeries,
    organs: np.ndarray,
    confined_maps: np.ndarray,
    affine: np.ndarray,
    thresholds: Mapping[str, float],
    report: Any,
    version: str,
    jpeg2000: bool = False,
) -> dict[str, Any]:
    """Write ``out_dir/dicom/``: the organ SEG, the findings SEG (if any region) and the SR."""
    import pydicom

    folder = Path(out_dir) / "dicom"
    folder.mkdir(parents=True, exist_ok=True)
    positives = [f.abnormality for f in report.findings]
    regions = finding_masks(confined_maps, thresholds, positives)
    summary = write_segs(folder, series, organs, regions, affine, version, jpeg2000=jpeg2000)
    meta = pydicom.dcmread(folder / ORGANS_SEG, stop_before_pixels=True).file_meta
    summary["transfer_syntax"] = str(meta.TransferSyntaxUID.name)
    summary["files"][REPORT_SR] = write_sr(folder, series, report, version)
    # No UID is written to this summary (probabilities.json): DICOM UIDs are identifiers.
    summary["source_images"] = len(series.datasets)
    return summary
