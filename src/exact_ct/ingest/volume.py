"""Assemble a DICOM series (or read a NIfTI input) into a RAS+ int16 HU volume with a millimetre affine."""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from exact_ct.ingest.config import IngestConfig
from exact_ct.ingest.qc import QCFailure

INT16_MIN, INT16_MAX = np.iinfo(np.int16).min, np.iinfo(np.int16).max
#: DICOM patient coordinates are LPS; NIfTI world coordinates are RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SliceSpec:
    """One 2D image of a series: a file, and the frame inside it for multi-frame files."""

    path: str
    rel: str
    frame: int | None
    ipp: tuple[float, float, float]
    slope: float
    intercept: float


@dataclass(frozen=True)
class SeriesSpec:
    """A candidate series: its shared geometry and its slices (in any order)."""

    series_hash: str
    iop: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    rows: int
    cols: int
    thickness: float | None
    kernel: str
    body_part: str
    slices: tuple[SliceSpec, ...]
    flags: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        """Relative paths of the series' files, each once, in first-seen order."""
        return tuple(dict.fromkeys(s.rel for s in self.slices))


@dataclass
class Volume:
    """A canonical volume: ``hu`` is int16 (x, y, z) in RAS+, ``affine`` maps voxels to RAS mm."""

    hu: np.ndarray
    affine: np.ndarray
    source_orientation: str
    n_slices: int
    source_sha256: str
    flags: tuple[str, ...] = ()
    #: files of the series quarantined on their own (e.g. a truncated end slice) while the rest passed
    file_failures: dict[str, QCFailure] = field(default_factory=dict)


class SeriesFailure(Exception):
    """A series failed: ``failure`` is the series-level rule; ``file_failures`` maps rel -> QCFailure."""

    def __init__(self, failure: QCFailure, file_failures: dict[str, QCFailure]) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.file_failures = file_failures


def slice_normal(iop: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row direction, column direction and slice normal (row x column) from IOP."""
    r = np.asarray(iop[:3], dtype=np.float64)
    c = np.asarray(iop[3:6], dtype=np.float64)
    r /= np.linalg.norm(r)
    c /= np.linalg.norm(c)
    return r, c, np.cross(r, c)


def sort_slices(spec: SeriesSpec) -> list[SliceSpec]:
    """Slices ordered by position along the slice normal (never by file name or InstanceNumber)."""
    _, _, n = slice_normal(spec.iop)
    return sorted(spec.slices, key=lambda s: (float(np.dot(s.ipp, n)), s.rel, s.frame or 0))


def _to_hu(raw: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Apply the modality rescale; integer arithmetic when exact so that no rounding can creep in."""
    if slope == 1.0 and float(intercept).is_integer():
        hu = raw.astype(np.int32) + int(intercept)
    else:
        hu = np.rint(raw.astype(np.float64) * slope + intercept)
    lo, hi = hu.min(), hu.max()
    if lo < INT16_MIN or hi > INT16_MAX:
        raise QCFailure("implausible_hu", f"rescaled values {lo:.0f}..{hi:.0f} do not fit int16 HU")
    return hu.astype(np.int16)


def _read_pixels(
    path: str, frames: list[int | None]
) -> tuple[dict[int | None, np.ndarray], str, float | None]:
    """Decode the requested frames of one file and hash its bytes (the file is read once).

    The third value is the padding value to ignore when the pixels are signed but stored in fewer
    bits than allocated (pydicom then sign-extends from the top stored bit, so a wrongly declared
    PixelRepresentation turns bone negative), else None: no sign check is needed.
    """
    import pydicom

    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as e:
        raise QCFailure(
            "unreadable_file", f"file cannot be parsed ({type(e).__name__}); truncated?"
        ) from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise QCFailure("missing_pixel_data", "no Pixel Data element")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise QCFailure("not_ct", f"colour image (SamplesPerPixel={ds.SamplesPerPixel}), not a CT slice")
    try:
        arr = ds.pixel_array
    except Exception as e:  # truncated or corrupt pixel data, broken codestreams
        raise QCFailure(
            "unreadable_file",
            f"pixel data cannot be decoded ({type(e).__name__}); file truncated or corrupt?",
        ) from None
    signed_partial = int(ds.get("PixelRepresentation", 0) or 0) == 1 and int(
        ds.get("BitsStored", 16) or 16
    ) < int(ds.get("BitsAllocated", 16) or 16)
    padding: float | None = None
    if signed_partial:
        # Padding: PixelPaddingValue, else the lowest value when it fills the image corner (the area
        # outside the reconstruction circle); bone is never there. NaN: no padding, every value counts.
        pad = ds.get("PixelPaddingValue")
        corner = arr.reshape(-1, *arr.shape[-2:])[0, 0, 0]
        padding = float(pad) if isinstance(pad, int) else float(corner) if corner == arr.min() else math.nan
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if n_frames > 1 and arr.ndim != 3:
        raise QCFailure("unreadable_file", f"expected {n_frames} frames, decoded shape {arr.shape}")
    out: dict[int | None, np.ndarray] = {}
    for f in frames:
        if f is None:
            if arr.ndim != 2:
                raise QCFailure("missing_geometry", "multi-frame pixel data without per-frame geometry")
            out[f] = arr
        else:
            out[f] = arr[f]
    return out, digest, padding


def assemble_series(spec: SeriesSpec, cfg: IngestConfig) -> Volume:
    """Decode, check and assemble one series. Raises SeriesFailure naming the first rule that fired.

    Check order (first failure wins, docs/ingest.md): per-file rules, duplicate_positions,
    missing_slices / nonuniform_spacing, oblique_or_tilted, duplicate_slices, too_few_slices,
    implausible_hu, not_chest.
    """
    ordered = sort_slices(spec)
    n_all = len(ordered)
    if n_all * spec.rows * spec.cols > cfg.max_volume_voxels:  # before the buffer is allocated
        raise SeriesFailure(
            QCFailure(
                "oversized_image",
                f"series {spec.series_hash}: {n_all} x {spec.rows} x {spec.cols} voxels, "
                f"above max_volume_voxels={cfg.max_volume_voxels}",
            ),
            {},
        )
    # (slice, row, col) in C order: each decoded slice is one contiguous write, and the transposed
    # view (col, row, slice) = (x, y, z) is Fortran-contiguous, which NIfTI writes without a copy.
    buf = np.empty((n_all, spec.rows, spec.cols), dtype=np.int16)
    slice_hashes: list[bytes | None] = [None] * n_all
    by_path: dict[str, list[int]] = {}
    for k, s in enumerate(ordered):
        by_path.setdefault(s.path, []).append(k)
    file_failures: dict[str, QCFailure] = {}
    digests: dict[str, str] = {}
    valid = np.ones(n_all, dtype=bool)
    hu_failure: QCFailure | None = None
    for path, idx in by_path.items():
        rel = ordered[idx[0]].rel
        try:
            pixels, digests[path], padding = _read_pixels(path, [ordered[k].frame for k in idx])
            for k in idx:
                s = ordered[k]
                raw = pixels[s.frame]
                if raw.shape != (spec.rows, spec.cols):
                    raise QCFailure("unreadable_file", f"pixel matrix {raw.shape} differs from header")
                try:
                    buf[k] = _to_hu(raw, s.slope, s.intercept)
                except QCFailure as e:
                    hu_failure = hu_failure or e
                    continue
                if padding is not None:
                    low = int(np.count_nonzero((buf[k] < cfg.min_hu) & (raw != padding)))
                    if low:
                        raise QCFailure(
                            "pixel_sign_error",
                            f"{low} voxel(s) below min_hu={cfg.min_hu:g} HU in signed pixel data stored in "
                            "fewer bits than allocated: PixelRepresentation is probably wrong (bone read as negative)",
                        )
                if cfg.check_duplicate_pixels and raw.min() != raw.max():
                    # constant (padding) slices may legitimately repeat, so they are not hashed
                    slice_hashes[k] = hashlib.sha256(buf[k].tobytes()).digest()
        except QCFailure as e:
            file_failures[rel] = e
            valid[idx] = False

    def fail(rule: str, message: str) -> SeriesFailure:
        return SeriesFailure(QCFailure(rule, f"series {spec.series_hash}: {message}"), file_failures)

    if not valid.all():
        ordered = [s for s, ok in zip(ordered, valid, strict=True) if ok]
        slice_hashes = [h for h, ok in zip(slice_hashes, valid, strict=True) if ok]
        buf = buf[valid]
    n = len(ordered)
    if n == 0:
        first = next(iter(file_failures.values()))
        raise SeriesFailure(
            QCFailure(first.rule, f"series {spec.series_hash}: no readable slice"), file_failures
        )

    r, c, normal = slice_normal(spec.iop)
    pos = np.array([s.ipp for s in ordered], dtype=np.float64)
    along = pos @ normal
    steps = np.diff(along)
    if n > 1:
        if steps.min() < cfg.duplicate_position_tol_mm:
            k = int(np.argmin(steps))
            raise fail(
                "duplicate_positions",
                f"slices {k + 1} and {k + 2} of {n} share one position; remove the duplicate",
            )
        median = float(np.median(steps))
        if steps.max() > 1.5 * median:
            k = int(np.argmax(steps))
            missing = round(steps[k] / median) - 1
            raise fail(
                "missing_slices",
                f"gap of {steps[k]:.2f} mm after slice {k + 1} of {n} where the step is {median:.2f} mm "
                f"(about {missing} slice(s) missing)",
            )
        dev = float(np.abs(steps - median).max())
        if dev > cfg.spacing_tolerance * median:
            raise fail(
                "nonuniform_spacing",
                f"slice step varies {steps.min():.3f}-{steps.max():.3f} mm (tolerance {cfg.spacing_tolerance:.0%})",
            )
    oblique = max(math.degrees(math.acos(min(1.0, float(np.abs(v).max())))) for v in (r, c))
    if oblique > cfg.max_oblique_deg:
        raise fail(
            "oblique_or_tilted", f"image plane is {oblique:.1f} deg oblique (max {cfg.max_oblique_deg})"
        )
    if n > 1:
        step_vec = (pos[-1] - pos[0]) / (n - 1)
        tilt = math.degrees(
            math.acos(min(1.0, abs(float(np.dot(step_vec, normal))) / float(np.linalg.norm(step_vec))))
        )
        if tilt > cfg.max_tilt_deg:
            raise fail(
                "oblique_or_tilted",
                f"gantry tilt {tilt:.1f} deg (max {cfg.max_tilt_deg}); resample with a tilt-aware tool",
            )
    else:
        step_vec = normal * (spec.thickness or 1.0)
    if cfg.check_duplicate_pixels and n > 1:
        seen: dict[bytes, int] = {}
        for k, h in enumerate(slice_hashes):
            if h is None:
                continue
            if h in seen:
                raise fail(
                    "duplicate_slices",
                    f"slices {seen[h] + 1} and {k + 1} of {n} hold identical pixel data (same image exported twice?)",
                )
            seen[h] = k
    if n < cfg.min_slices:
        raise fail("too_few_slices", f"{n} slice(s), fewer than min_slices={cfg.min_slices}")
    if hu_failure is not None:
        raise fail(hu_failure.rule, hu_failure.message)

    affine_lps = np.eye(4)
    affine_lps[:3, 0] = r * spec.pixel_spacing[1]  # array x runs along a row: column spacing
    affine_lps[:3, 1] = c * spec.pixel_spacing[0]
    affine_lps[:3, 2] = step_vec
    affine_lps[:3, 3] = pos[0]
    affine_ras = LPS_TO_RAS @ affine_lps
    source_orientation = "".join(nib.aff2axcodes(affine_ras))
    hu, affine = to_ras(buf.transpose(2, 1, 0), affine_ras)
    check_content(hu, spec.body_part, cfg, where=f"series {spec.series_hash}", file_failures=file_failures)
    content = hashlib.sha256()
    for path in dict.fromkeys(s.path for s in ordered):
        content.update(digests[path].encode())
    flags = list(spec.flags)
    if oblique > 0.01:
        flags.append("oblique_kept")
    if file_failures:
        flags.append("files_quarantined")
    return Volume(hu, affine, source_orientation, n, content.hexdigest(), tuple(flags), file_failures)


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip array axes so that they run closest to R, A, S (no resampling)."""
    ornt = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt(("R", "A", "S"))
    transform = nib.orientations.ornt_transform(ornt, target)
    if np.array_equal(transform, target):  # identity: already RAS+
        return array, affine
    out = nib.orientations.apply_orientation(array, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape)
    return out, new_affine


def check_content(
    hu: np.ndarray,
    body_part: str,
    cfg: IngestConfig,
    where: str,
    file_failures: dict[str, QCFailure] | None = None,
) -> None:
    """The intensity rules (implausible_hu, not_chest) on a subsample of the volume (fast, stable)."""
    step = max(1, hu.shape[0] // 128)
    sub = hu[::step, ::step, :]
    air = float((sub < cfg.hu_air_threshold).mean())
    p99 = float(np.percentile(sub, 99))

    def fail(rule: str, message: str) -> SeriesFailure:
        return SeriesFailure(QCFailure(rule, f"{where}: {message}"), dict(file_failures or {}))

    if air < cfg.min_air_share:
        raise fail(
            "implausible_hu",
            f"only {air:.1%} of voxels below {cfg.hu_air_threshold:.0f} HU (min {cfg.min_air_share:.1%}); "
            "rescale slope/intercept missing?",
        )
    if p99 > cfg.max_hu_p99:
        raise fail("implausible_hu", f"99th percentile {p99:.0f} HU above max_hu_p99={cfg.max_hu_p99:.0f}")
    if body_part and body_part in cfg.non_chest_body_parts:
        raise fail("not_chest", "BodyPartExamined is in non_chest_body_parts")
    above = sub > -950
    lung = float((above & (sub < -650)).sum() / max(int(above.sum()), 1))
    if lung < cfg.min_lung_share:
        raise fail("not_chest", f"lung-density share {lung:.3f} below min_lung_share={cfg.min_lung_share}")


def load_nifti_input(path: str, cfg: IngestConfig) -> Volume:
    """Read a NIfTI input, check it, bring it to RAS+ int16 HU. Raises SeriesFailure (no file failures)."""

    def fail(rule: str, message: str) -> SeriesFailure:
        return SeriesFailure(QCFailure(rule, f"NIfTI input: {message}"), {})

    size = Path(path).stat().st_size if Path(path).is_file() else 0
    if size > cfg.max_file_mb * 1024 * 1024:
        raise fail("oversized_file", f"{size / 2**20:.0f} MB, above max_file_mb={cfg.max_file_mb:g}")
    try:
        img: Any = nib.load(path)
        voxels = math.prod(int(v) for v in img.shape)
        if voxels > cfg.max_volume_voxels:  # the header is read; the data would be allocated next
            raise fail(
                "oversized_image",
                f"shape {tuple(img.shape)} ({voxels} voxels) above max_volume_voxels={cfg.max_volume_voxels}",
            )
        data = np.asanyarray(img.dataobj)
    except SeriesFailure:
        raise
    except Exception as e:
        raise fail("unreadable_file", f"cannot be read ({type(e).__name__}); truncated?") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise fail("invalid_nifti", f"{data.ndim}D image with shape {data.shape}; expected a 3D volume")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise fail("invalid_nifti", "affine is singular or not finite; no trustworthy geometry")
    flags: list[str] = []
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise fail("invalid_nifti", "NaN or infinite values")
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            flags.append("rounded_from_float")
        data = rounded
    if data.dtype != np.int16:
        lo, hi = float(data.min()), float(data.max())
        if lo < INT16_MIN or hi > INT16_MAX:
            raise fail("implausible_hu", f"values {lo:.0f}..{hi:.0f} do not fit int16 HU")
        flags.append(f"cast_from_{np.dtype(img.get_data_dtype()).name}")
        data = data.astype(np.int16)
    source_orientation = "".join(nib.aff2axcodes(affine))
    hu, ras_affine = to_ras(data, affine)
    if hu.shape[2] < cfg.min_slices:
        raise fail("too_few_slices", f"{hu.shape[2]} slice(s), fewer than min_slices={cfg.min_slices}")
    check_content(hu, "", cfg, where="NIfTI input")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return Volume(hu, ras_affine, source_orientation, int(hu.shape[2]), digest, tuple(flags))
