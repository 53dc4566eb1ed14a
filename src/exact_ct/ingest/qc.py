"""Named quality-control rules of ingest: every skipped or quarantined input carries one of these names."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from exact_ct.droptree import LINK_RULES

#: Quarantine rules, in the order they are checked for a series (file rules first). Each entry says
#: what the rule catches and which ``ingest`` parameter sets its threshold (docs/ingest.md has the table).
RULES: MappingProxyType[str, str] = MappingProxyType(
    {
        "unreadable_file": "not a DICOM/NIfTI file, or truncated / corrupt so it cannot be parsed",
        "path_too_long": "a file or folder path longer than the OS allows (PATH_MAX): it cannot be opened",
        "non_utf8_path": "a file or folder name that is not valid UTF-8 (the path is written with escapes)",
        "oversized_file": "file larger than max_file_mb, or a deflated DICOM inflating beyond it",
        "oversized_image": "Rows x Columns above max_image_pixels, or frames/volume above max_volume_voxels",
        "burned_in_annotation": "BurnedInAnnotation = YES (text drawn into the pixels; allow_burned_in_annotation)",
        "invalid_rescale": "RescaleSlope / RescaleIntercept present but empty, not a number, non-finite, or slope 0",
        "not_ct": "Modality is not CT (or missing with a non-CT SOP class)",
        "missing_geometry": "no usable ImagePositionPatient / ImageOrientationPatient / PixelSpacing",
        "unsupported_transfer_syntax": "no installed decoder for the file's transfer syntax",
        "missing_pixel_data": "the file has no Pixel Data element",
        "invalid_nifti": "NIfTI input is not 3D, has a singular affine, or holds NaN/inf values",
        "duplicate_positions": "two slices at the same position along the slice normal (duplicate_position_tol_mm)",
        "missing_slices": "a gap between slices larger than 1.5x the usual step (spacing_tolerance)",
        "nonuniform_spacing": "slice steps differ from the median step by more than spacing_tolerance",
        "oblique_or_tilted": "in-plane axes oblique beyond max_oblique_deg or gantry tilt beyond max_tilt_deg",
        "duplicate_slices": "two slices with identical, non-constant pixel data (check_duplicate_pixels)",
        "too_few_slices": "fewer slices than min_slices",
        "implausible_hu": "values outside int16 after rescale, too little air, or 99th percentile above max_hu_p99",
        "pixel_sign_error": "signed pixels stored in fewer bits than allocated give values below min_hu (bone read as negative)",
        "not_chest": "BodyPartExamined in non_chest_body_parts, or lung-density share below min_lung_share",
        "duplicate_accession": "one accession number on several studies/patients, or on several report rows",
        "study_without_report": "imaging study whose accession number has no row in reports.csv (require_report)",
        "report_without_study": "reports.csv row whose accession number has no usable imaging input",
        "invalid_utf8": "reports.csv row that is not valid UTF-8 (the row is dropped, its study has no report)",
        "report_too_long": "reports.csv row longer than max_report_chars (the text is dropped, its study has no report)",
        "incomplete_series": "InstanceNumber gaps in a single-frame series, or fewer images than its "
        "ImagesInAcquisition: a partly copied series (exact_ct.ingest.completeness)",
        "split_series": "one SeriesInstanceUID under several studies (accession numbers): a series split in two",
        **LINK_RULES,  # symlink, not_regular_file, unreadable_path: entries of the drop that are never read
    }
)

#: Reasons for skipping a file that are not errors (the file is accounted for, but not quarantined).
SKIP_REASONS: MappingProxyType[str, str] = MappingProxyType(
    {
        "localizer": "scout / localizer / topogram image",
        "not_selected": "a valid series of the study that lost to the diagnostic series by the selection rules",
        "dicomdir": "DICOMDIR index file (no image)",
    }
)


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input file: ``status`` is used | skipped | quarantined."""

    path: str  # relative to the drop, already scrubbed of identifiers
    status: str
    rule: str = ""
    message: str = ""
    #: identifying header values of a skipped/quarantined DICOM file, used only to scrub paths
    identifiers: tuple[str, ...] = field(default=(), repr=False, compare=False)


class QCFailure(Exception):
    """A rule fired; ``rule`` is a key of RULES and ``message`` says what, where and what to do."""

    def __init__(self, rule: str, message: str) -> None:
        if rule not in RULES:
            raise KeyError(f"unknown QC rule {rule!r}")
        super().__init__(f"{message} (rule {rule})")
        self.rule = rule
        self.message = message
