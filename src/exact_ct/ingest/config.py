"""Typed parameters of ingest (the ``ingest:`` section of params.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from exact_ct.config import NonNegativeFloat, PositiveInt, Share


@dataclass(frozen=True)
class IngestConfig:
    """Every threshold and choice of ingest; docs/ingest.md explains each rule.

    Attributes:
        workers: processes for header reading and per-study work (1 = in-process).
        max_quarantine_share: the batch fails (non-zero exit) when the share of quarantined study
            units (imaging studies + orphan report rows) exceeds this.
        require_report: quarantine imaging studies whose accession has no report row.
        min_slices: fewest slices a diagnostic series may have.
        duplicate_position_tol_mm: slices closer than this along the normal are duplicates.
        spacing_tolerance: allowed relative deviation of a slice step from the median step; a step
            above 1.5x the median is reported as missing slices.
        check_duplicate_pixels: quarantine series in which two non-constant slices are bit-identical.
        max_oblique_deg: in-plane axes may deviate this much from the nearest patient axis; the exact
            (oblique) direction is kept in the affine, no resampling.
        max_tilt_deg: the slice step may deviate this much from the slice normal (gantry tilt).
        thin_slice_mm: thinner slices win, but thicknesses at or below this count as equal, so
            among thin series the kernel decides.
        kernel_preference: regular expressions (case-insensitive) matched against ConvolutionKernel,
            best first (lung, then soft tissue: most of the 18 findings are lung findings); a
            kernel matching none ranks after all of them.
        localizer_keywords: ImageType values / SeriesDescription words marking scouts.
        non_chest_body_parts: BodyPartExamined values that are not a chest.
        min_lung_share: share of voxels in the lung-parenchyma range (-950..-650 HU) among voxels
            above -950 HU that a chest CT must reach.
        hu_air_threshold / min_air_share: at least this share of voxels must be below this HU
            (a CT always images air); catches missing rescale intercepts.
        max_hu_p99: the 99th percentile of HU must not exceed this.
        header_chunk: files per header-reading task.
        allow_burned_in_annotation: images with BurnedInAnnotation = YES (text such as the patient's
            name drawn into the pixels) are quarantined unless this is true; allowed ones carry the
            flag ``burned_in_annotation``.
        min_hu: signed pixel data stored in fewer bits than allocated (PixelRepresentation = 1,
            BitsStored < BitsAllocated) must not give values below this (other than the padding
            value): such values are bone read with the wrong sign.
        max_image_pixels: largest Rows x Columns of one image (the header is checked before any
            pixel is decoded).
        max_volume_voxels: largest voxel count of one series or NIfTI volume (frames x Rows x Columns).
        max_file_mb: largest input file, and largest inflated size of a deflate-compressed DICOM file.
        max_report_chars: a reports.csv row whose findings + impression are longer is quarantined
            (report_too_long) without its text being read; its study then has no report.
    """

    workers: PositiveInt = 2
    max_quarantine_share: Share = 0.5
    require_report: bool = True
    min_slices: PositiveInt = 10
    duplicate_position_tol_mm: NonNegativeFloat = 0.01
    spacing_tolerance: NonNegativeFloat = 0.05
    check_duplicate_pixels: bool = True
    max_oblique_deg: NonNegativeFloat = 10.0
    max_tilt_deg: NonNegativeFloat = 1.0
    thin_slice_mm: NonNegativeFloat = 2.5
    kernel_preference: tuple[str, ...] = (
        r"lung|chest|sharp|^b[56789]\d|^i[5-7]\d|^fc[5-8]\d|^bl\d\d",
        r"soft|standard|body|medi|^b[234]\d|^i[34]\d|^fc0\d|^fc1\d|^br[34]\d",
    )
    localizer_keywords: tuple[str, ...] = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM")
    non_chest_body_parts: tuple[str, ...] = (
        "HEAD",
        "BRAIN",
        "SKULL",
        "NECK",
        "HEADNECK",
        "ABDOMEN",
        "PELVIS",
        "ABDOMENPELVIS",
        "KNEE",
        "LEG",
        "HIP",
        "ANKLE",
        "FOOT",
        "HAND",
        "WRIST",
        "ELBOW",
        "ARM",
        "EXTREMITY",
        "LSPINE",
        "CSPINE",
    )
    min_lung_share: Share = 0.14
    hu_air_threshold: float = -500.0
    min_air_share: Share = 0.01
    max_hu_p99: float = 3000.0
    header_chunk: PositiveInt = 256
    allow_burned_in_annotation: bool = False
    min_hu: float = -1200.0
    max_image_pixels: PositiveInt = 2048 * 2048
    max_volume_voxels: PositiveInt = 1024 * 1024 * 1024
    max_file_mb: NonNegativeFloat = 2048.0
    max_report_chars: PositiveInt = 50000
