"""Ingest a hospital drop: discover files, group series and studies, assemble volumes, write the outs."""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exact_ct.droptree import entry_rejection
from exact_ct.ingest.completeness import incomplete_series
from exact_ct.ingest.config import IngestConfig
from exact_ct.ingest.deid import MIN_LENGTH, NAME_TOKEN, Scrubber, name_parts
from exact_ct.ingest.headers import FileHeader, is_nifti, read_header
from exact_ct.ingest.qc import RULES, FileOutcome
from exact_ct.ingest.volume import (
    SeriesFailure,
    SeriesSpec,
    SliceSpec,
    Volume,
    assemble_series,
    load_nifti_input,
)

log = logging.getLogger(__name__)

REPORT_COLUMNS = ("accession_number", "patient_id", "findings", "impression")
MANIFEST_COLUMNS = (
    "study_id",
    "patient_id",
    "volume",
    "source",
    "series_uid_hash",
    "shape_xyz",
    "spacing_xyz_mm",
    "orientation",
    "source_orientation",
    "n_slices",
    "n_source_files",
    "source_sha256",
    "qc_flags",
)
DROP_META_FILES = ("reports.csv", "_COMPLETE", "_MANIFEST.sha256")  # exact_ct.batches: REPORTS_FILE, ...
_SURROGATE_RE = re.compile("[\udc80-\udcff]")
_INVALID = "_invalid_utf8"  # marks a reports.csv row that is not valid UTF-8 (its values are dropped)
_TOO_LONG = "_too_long"  # marks a row whose text exceeds max_report_chars (its text is dropped unread)
_PATH_DATE_RE = re.compile(r"(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?:\d{4,6})?")


class QuarantineShareExceeded(RuntimeError):
    """The batch quarantined more than ``max_quarantine_share`` of its study units."""


@dataclass(frozen=True)
class StudyTask:
    """Everything a worker needs for one study; holds no identifier (ids are already pseudonyms)."""

    study_id: str
    volume_path: str
    cfg: IngestConfig
    has_report: bool
    candidates: tuple[SeriesSpec, ...] = ()
    nifti_path: str = ""
    nifti_rel: str = ""


@dataclass
class StudyResult:
    study_id: str
    outcomes: list[FileOutcome]
    row: dict[str, Any] | None = None
    rule: str = ""
    message: str = ""


@dataclass
class _Study:
    key: tuple[str, str]
    accession: str = ""
    headers: list[FileHeader] = field(default_factory=list)
    nifti: list[tuple[str, str]] = field(default_factory=list)  # (path, rel)


# ----------------------------------------------------------------------------------------------- workers


def _read_chunk(chunk: tuple[list[tuple[str, str]], IngestConfig]) -> list[FileHeader | FileOutcome]:
    items, cfg = chunk
    return [read_header(path, rel, cfg) for path, rel in items]


def process_study(task: StudyTask) -> StudyResult:
    """Build the study's volume from its best passing candidate, write it, and account for every file."""
    from exact_ct.io import save_nifti, spacing_from_affine

    outcomes: list[FileOutcome] = []
    volume: Volume | None = None
    chosen: SeriesSpec | None = None
    first_failure: SeriesFailure | None = None
    if task.nifti_path:
        try:
            volume = load_nifti_input(task.nifti_path, task.cfg)
        except SeriesFailure as e:
            first_failure = e
            outcomes.append(FileOutcome(task.nifti_rel, "quarantined", e.failure.rule, e.failure.message))
        used_files = [task.nifti_rel]
    else:
        for spec in task.candidates:
            if volume is not None:
                outcomes += [
                    FileOutcome(rel, "skipped", "not_selected", f"series {spec.series_hash} not selected")
                    for rel in spec.files
                ]
                continue
            try:
                volume, chosen = assemble_series(spec, task.cfg), spec
            except SeriesFailure as e:
                first_failure = first_failure or e
                for rel in spec.files:
                    f = e.file_failures.get(rel, e.failure)
                    outcomes.append(FileOutcome(rel, "quarantined", f.rule, f.message))
        used_files = []
        if volume is not None and chosen is not None:
            # Files that failed on their own inside an otherwise good series are quarantined singly.
            for rel, f in volume.file_failures.items():
                outcomes.append(FileOutcome(rel, "quarantined", f.rule, f.message))
            used_files = [rel for rel in chosen.files if rel not in volume.file_failures]
    if volume is None:
        assert first_failure is not None
        return StudyResult(
            task.study_id, outcomes, None, first_failure.failure.rule, first_failure.failure.message
        )
    if not task.has_report and task.cfg.require_report:
        msg = f"study {task.study_id}: no row in reports.csv for its accession number"
        outcomes += [FileOutcome(rel, "quarantined", "study_without_report", msg) for rel in used_files]
        return StudyResult(task.study_id, outcomes, None, "study_without_report", msg)
    outcomes += [FileOutcome(rel, "used") for rel in used_files]
    save_nifti(volume.hu, volume.affine, task.volume_path)
    spacing = spacing_from_affine(volume.affine)
    flags = set(volume.flags)
    if not task.has_report:
        flags.add("no_report")
    row = {
        "study_id": task.study_id,
        "volume": f"volumes/{Path(task.volume_path).name}",
        "source": "nifti" if task.nifti_path else "dicom",
        "series_uid_hash": chosen.series_hash if chosen is not None else "",
        "shape_xyz": "x".join(str(int(v)) for v in volume.hu.shape),
        "spacing_xyz_mm": "x".join(f"{v:.6g}" for v in spacing),
        "orientation": "RAS",
        "source_orientation": volume.source_orientation,
        "n_slices": volume.n_slices,
        "n_source_files": len(used_files),
        "source_sha256": volume.source_sha256,
        "qc_flags": ";".join(sorted(flags)),
    }
    return StudyResult(task.study_id, outcomes, row)


# ----------------------------------------------------------------------------------------------- planning


def series_key(h: FileHeader) -> tuple[Any, ...]:
    """Series = SeriesInstanceUID + geometry, so that empty or shared UIDs still split correctly.

    An empty UID falls back to the file's folder: exports without UIDs keep one series per folder.
    """
    uid = h.series_uid or f"dir:{Path(h.rel).parent}"
    geometry = (
        tuple(round(v, 3) for v in h.iop),
        tuple(round(v, 4) for v in h.pixel_spacing),
        h.rows,
        h.cols,
    )
    return (uid, geometry)


def _kernel_rank(kernel: str, cfg: IngestConfig) -> int:
    for i, pattern in enumerate(cfg.kernel_preference):
        if kernel and re.search(pattern, kernel.strip(), re.IGNORECASE):
            return i
    return len(cfg.kernel_preference)


def rank_series(specs: list[SeriesSpec], cfg: IngestConfig) -> list[SeriesSpec]:
    """Order candidate series best first (the documented selection rules, docs/ingest.md):

    1. thinner slices, where every thickness <= thin_slice_mm counts as equal (unknown = thickest),
    2. convolution kernel by kernel_preference (lung, then soft tissue, then anything else),
    3. most slices, 4. thinner slices, 5. the series hash (a stable tie-break).
    """

    def key(s: SeriesSpec) -> tuple[Any, ...]:
        thick = s.thickness if s.thickness is not None else float("inf")
        return (
            round(max(thick, cfg.thin_slice_mm), 2),
            _kernel_rank(s.kernel, cfg),
            -len(s.slices),
            thick,
            s.series_hash,
        )

    return sorted(specs, key=key)


def build_series(headers: list[FileHeader], series_hash_of: Any) -> list[SeriesSpec]:
    """Group one study's usable file headers into series; one spec each, slices in file order.

    ``series_hash_of`` turns a series' grouping key (as text) into its pseudonymous series id.
    """
    groups: dict[tuple[Any, ...], list[FileHeader]] = defaultdict(list)
    for h in headers:
        groups[series_key(h)].append(h)
    specs = []
    for key, members in groups.items():
        members.sort(key=lambda h: h.rel)
        first = members[0]
        slices = tuple(
            SliceSpec(h.path, h.rel, i if h.multiframe else None, fr.ipp, fr.slope, fr.intercept)
            for h in members
            for i, fr in enumerate(h.frames)
        )
        flags = sorted({f for h in members for f in h.flags})
        specs.append(
            SeriesSpec(
                series_hash=series_hash_of(repr(key)),
                iop=first.iop,
                pixel_spacing=first.pixel_spacing,
                rows=first.rows,
                cols=first.cols,
                thickness=first.thickness,
                kernel=first.kernel,
                body_part=first.body_part,
                slices=slices,
                flags=tuple(flags),
            )
        )
    return specs


def _display(path: str) -> str:
    """A path safe to write as UTF-8: undecodable bytes of a file name are shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _path_max(drop: Path) -> int:
    try:
        return int(os.pathconf(drop, "PC_PATH_MAX"))
    except (OSError, ValueError):
        return 4096


def _walk_failure(error: OSError, drop: Path) -> FileOutcome:
    """One quarantined input for a folder os.walk could not list."""
    where = str(error.filename or drop)
    try:
        rel = Path(where).relative_to(drop).as_posix()
    except ValueError:
        rel = where
    rel = _display(rel) + "/"
    if error.errno == errno.ENAMETOOLONG:
        return FileOutcome(
            rel,
            "quarantined",
            "path_too_long",
            "folder path longer than the OS allows; its files cannot be read",
        )
    return FileOutcome(
        rel, "quarantined", "unreadable_file", f"folder cannot be listed ({type(error).__name__})"
    )


def _path_failure(path: str, rel: str, path_max: int) -> FileOutcome | None:
    """path_too_long / non_utf8_path for a file ingest must not open, else None."""
    if _SURROGATE_RE.search(rel):
        return FileOutcome(
            _display(rel),
            "quarantined",
            "non_utf8_path",
            "file or folder name is not valid UTF-8; rename it (the path is shown with \\x escapes)",
        )
    if len(os.fsencode(os.path.abspath(path))) >= path_max:
        return FileOutcome(
            rel,
            "quarantined",
            "path_too_long",
            f"path longer than the OS limit ({path_max} bytes); move it up",
        )
    return None


def _read_reports(drop: Path, max_chars: int) -> tuple[list[dict[str, str]], str]:
    """The rows of reports.csv, and the file's likely encoding when it is not UTF-8 ("" when it is)."""
    import pandas as pd

    path = drop / "reports.csv"
    if not path.exists():
        log.warning("no reports.csv in the drop: every study will lack a report")
        return [], ""
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw[:4096]:
        raise ValueError(
            f"{path}: the file is UTF-16 encoded (byte-order mark or NUL bytes); expected UTF-8. "
            "Re-export it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)"
        )
    header = next(csv.reader(io.StringIO(raw.decode("utf-8-sig", "replace"))), [])
    repeated = sorted({c.strip() for c in header if [h.strip() for h in header].count(c.strip()) > 1})
    if repeated:
        raise ValueError(
            f"{path}: column(s) {repeated} appear more than once in the header row; "
            "keep one of each (which copy is the real one cannot be told)"
        )
    encoding = ""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # Spreadsheet exports without UTF-8 are nearly always Windows-1252 / Latin-1.
        encoding = "Windows-1252 (Latin-1)" if _decodes(raw, "cp1252") else "an unknown encoding"
    # surrogateescape keeps undecodable bytes as lone surrogates, so one badly encoded row is
    # quarantined (rule invalid_utf8) instead of failing the whole batch.
    frame = pd.read_csv(
        path, dtype=str, keep_default_na=False, encoding="utf-8-sig", encoding_errors="surrogateescape"
    )
    missing = [c for c in REPORT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(REPORT_COLUMNS)}")
    rows = []
    for _, row in frame.iterrows():
        r = {
            c: str(row[c]).strip() if c in ("accession_number", "patient_id") else str(row[c])
            for c in REPORT_COLUMNS
        }
        if any(_SURROGATE_RE.search(v) for v in r.values()):
            r = {c: "" for c in REPORT_COLUMNS} | {_INVALID: "1"}
        elif (n_chars := len(r["findings"]) + len(r["impression"])) > max_chars:
            r = r | {"findings": "", "impression": "", _TOO_LONG: str(n_chars)}
        rows.append(r)
    return rows, encoding


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- main entry


def ingest_drop(
    drop: str | Path,
    out: str | Path,
    cfg: IngestConfig,
    progress: bool = True,
    key_peers: str | Path | None = None,
) -> dict[str, Any]:
    """Ingest one drop into ``out`` (volumes/, manifest.csv, quarantine.csv, skipped.csv, reports.csv,
    key_fingerprint.txt).

    Returns the summary counts. Does not raise when the quarantine share is too high: the caller
    compares ``summary["quarantine_share"]`` with ``cfg.max_quarantine_share`` (``summary["passed"]``).
    ``key_peers``: a folder holding the other batches' outputs (e.g. ``data/interim/ingest``); ingest
    stops with KeyChangedError before reading anything when one was made with another key.
    """
    import pandas as pd

    from exact_ct.io import write_csv_atomic, write_text_atomic
    from exact_ct.parallel import map_ordered
    from exact_ct.privacy import (
        FINGERPRINT_FILE,
        check_key_unchanged,
        key_fingerprint,
        patient_pseudonym,
        pseudonym_key,
        pseudonymise,
        study_pseudonym,
    )

    key = pseudonym_key()  # fails before any work when the key is missing (outside demo/test) or weak
    drop, out = Path(drop), Path(out)
    fingerprint = key_fingerprint(key)
    if key_peers is not None:
        check_key_unchanged(fingerprint, Path(key_peers), own=out)
    if not drop.is_dir():
        raise FileNotFoundError(f"{drop}: drop folder not found")
    meta = {drop / name for name in DROP_META_FILES}
    # Links are never followed (a link to /proc/self/environ would be read as input): each link to a
    # file or folder and each special file is one quarantined input (exact_ct.droptree). A folder that
    # cannot be listed (path over the OS limit, no permission) is one quarantined input, never left out.
    walk_errors: list[OSError] = []
    files = sorted(
        p
        for root, dirs, names in os.walk(drop, followlinks=False, onerror=walk_errors.append)
        for p in (
            Path(root) / n for n in [*names, *(d for d in dirs if os.path.islink(os.path.join(root, d)))]
        )
        if p not in meta
    )
    rels = {str(p): p.relative_to(drop).as_posix() for p in files}
    outcomes: list[FileOutcome] = [_walk_failure(e, drop) for e in walk_errors]
    path_max = _path_max(drop)
    readable = []
    for p in files:
        failure = _path_failure(str(p), rels[str(p)], path_max)
        rejected = entry_rejection(p, rels[str(p)]) if failure is None else None
        if rejected is not None:
            failure = FileOutcome(_display(rejected.rel), "quarantined", rejected.rule, rejected.message)
        if failure is not None:
            outcomes.append(failure)
        else:
            readable.append(p)
    log.info("ingest: %d input files (%d folders not listable)", len(files), len(walk_errors))
    n_inputs = len(files) + len(walk_errors)
    files = readable
    studies: dict[tuple[str, str], _Study] = {}

    def study_for(k: tuple[str, str], accession: str) -> _Study:
        if k not in studies:
            studies[k] = _Study(k, accession)
        return studies[k]

    dicom_items = []
    for p in files:
        if is_nifti(p):
            accession = re.sub(r"\.nii(\.gz)?$", "", p.name, flags=re.IGNORECASE)
            study_for(("acc", accession), accession).nifti.append((str(p), rels[str(p)]))
        else:
            dicom_items.append((str(p), rels[str(p)]))
    chunks = [
        (dicom_items[i : i + cfg.header_chunk], cfg) for i in range(0, len(dicom_items), cfg.header_chunk)
    ]
    for chunk_result in map_ordered(
        _read_chunk, chunks, workers=cfg.workers, desc="headers", progress=progress
    ):
        for item in chunk_result:
            if isinstance(item, FileOutcome):
                outcomes.append(item)
                continue
            if item.accession:
                k = ("acc", item.accession)
            elif item.study_uid:
                k = ("uid", item.study_uid)
            else:
                k = ("dir", str(Path(item.rel).parent))
            study_for(k, item.accession).headers.append(item)

    max_report_chars = cfg.max_report_chars
    reports, report_encoding = _read_reports(drop, max_report_chars)
    if report_encoding:
        log.warning("reports.csv is not valid UTF-8; it looks like %s", report_encoding)
    report_rows: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(reports):
        if _INVALID not in r and _TOO_LONG not in r:
            report_rows[r["accession_number"]].append(i)

    # Identifiers of the whole drop, used to scrub paths written to quarantine.csv / skipped.csv.
    path_table: dict[str, str] = {}
    header_idents = [i for st in studies.values() for h in st.headers for i in h.identifiers]
    header_idents += [i for o in outcomes for i in o.identifiers]  # skipped / quarantined files too
    for ident in header_idents:
        for part in name_parts(ident):
            path_table[part.lower()] = "[REDACTED]"
    for r in reports:
        for part in name_parts(r["patient_id"]):
            path_table[part.lower()] = "[REDACTED]"
    for acc in {st.accession for st in studies.values()} | set(report_rows):
        if len(acc) >= MIN_LENGTH:
            path_table[acc.lower()] = study_pseudonym(acc, key)

    def series_hash_of(text: str) -> str:
        return pseudonymise(text, key, prefix="se-")

    tasks: list[StudyTask] = []
    study_patient: dict[str, str] = {}
    study_scrubbers: dict[str, Scrubber] = {}
    study_report: dict[str, int] = {}
    quarantined_studies: Counter[str] = Counter()
    study_ids_seen: set[str] = set()
    accession_to_study: dict[str, str] = {}
    volumes_dir = out / "volumes"
    series_problems = incomplete_series({st.key: st.headers for st in studies.values()})
    for st in sorted(studies.values(), key=lambda s: s.key):
        kind, value = st.key
        study_id = (
            study_pseudonym(value, key)
            if kind == "acc"
            else pseudonymise(f"{kind}:{value}", key, prefix="s-")
        )
        study_ids_seen.add(study_id)
        if st.accession or kind == "acc":
            accession_to_study[value] = study_id
        rows = report_rows.get(value, []) if kind == "acc" else []
        study_uids = {h.study_uid for h in st.headers if h.study_uid}
        patient_ids = {h.patient_id for h in st.headers if h.patient_id}
        duplicate_reason = ""
        if len(study_uids) > 1:
            duplicate_reason = f"accession number shared by {len(study_uids)} studies"
        elif len(patient_ids) > 1:
            duplicate_reason = f"accession number shared by {len(patient_ids)} patients"
        elif len(st.nifti) + (1 if st.headers else 0) > 1:
            duplicate_reason = (
                f"accession number has {len(st.nifti)} NIfTI input(s) and {len(st.headers)} DICOM file(s)"
            )
        elif len(rows) > 1:
            duplicate_reason = f"accession number appears on {len(rows)} report rows"
        if duplicate_reason:
            msg = f"study {study_id}: {duplicate_reason}; resolve the export"
            outcomes += [FileOutcome(h.rel, "quarantined", "duplicate_accession", msg) for h in st.headers]
            outcomes += [FileOutcome(rel, "quarantined", "duplicate_accession", msg) for _, rel in st.nifti]
            quarantined_studies["duplicate_accession"] += 1
            continue
        # A partly copied series, or one split across studies, is quarantined whole (completeness.py).
        partial = [h for h in st.headers if h.rel in series_problems]
        outcomes += [FileOutcome(h.rel, "quarantined", *series_problems[h.rel]) for h in partial]
        usable = [h for h in st.headers if h.rel not in series_problems]
        if partial and not usable and not st.nifti:
            quarantined_studies[series_problems[partial[0].rel][0]] += 1
            continue
        report = reports[rows[0]] if rows else None
        pid = next(iter(sorted(patient_ids)), "") or (report["patient_id"] if report else "")
        study_patient[study_id] = (
            patient_pseudonym(pid, key) if pid else pseudonymise(f"study:{study_id}", key, prefix="p-")
        )
        if rows:
            study_report[study_id] = rows[0]
            idents = {i for h in st.headers for i in h.identifiers}
            repl = {value: study_id}
            for ident in {pid, *patient_ids, report["patient_id"] if report else ""}:
                if ident:
                    repl[ident] = patient_pseudonym(ident, key)
            for private in sorted({v for h in st.headers for v in h.private_values}):
                repl.setdefault(private, NAME_TOKEN)  # whole vendor-tag values, never split into words
            study_scrubbers[study_id] = Scrubber(idents, repl)
        volume_path = str(volumes_dir / f"{study_id}.nii.gz")
        if st.nifti:
            path, rel = st.nifti[0]
            tasks.append(StudyTask(study_id, volume_path, cfg, bool(rows), nifti_path=path, nifti_rel=rel))
        else:
            specs = tuple(rank_series(build_series(usable, series_hash_of), cfg))
            tasks.append(StudyTask(study_id, volume_path, cfg, bool(rows), candidates=specs))
    tasks.sort(key=lambda t: t.study_id)

    manifest_rows: list[dict[str, Any]] = []
    for result in map_ordered(process_study, tasks, workers=cfg.workers, desc="studies", progress=progress):
        outcomes += result.outcomes
        if result.row is None:
            quarantined_studies[result.rule] += 1
            log.info("study %s quarantined (rule %s)", result.study_id, result.rule)
            continue
        result.row["patient_id"] = study_patient[result.study_id]
        manifest_rows.append(result.row)

    # Reports: de-identified rows of used studies; orphan rows quarantined.
    used_ids = {r["study_id"] for r in manifest_rows}
    report_out = []
    report_quarantine: list[FileOutcome] = []
    for i, r in enumerate(reports):
        acc = r["accession_number"]
        sid = accession_to_study.get(acc) if acc else None
        where = f"reports.csv:line {i + 2}"
        if _INVALID in r:
            msg = (
                f"report row is not valid UTF-8 (reports.csv looks like {report_encoding}); "
                "re-export reports.csv as UTF-8"
            )
            report_quarantine.append(FileOutcome(where, "quarantined", "invalid_utf8", msg))
            continue
        if _TOO_LONG in r:
            msg = (
                f"report text has {r[_TOO_LONG]} characters, above max_report_chars={max_report_chars}; "
                "the text is not read (nor de-identified, nor written)"
            )
            report_quarantine.append(FileOutcome(where, "quarantined", "report_too_long", msg))
            continue
        if sid is None:
            msg = (
                "report row has no accession number"
                if not acc
                else f"no imaging study for study {study_pseudonym(acc, key)}"
            )
            report_quarantine.append(FileOutcome(where, "quarantined", "report_without_study", msg))
            continue
        if sid in used_ids and study_report.get(sid) == i:
            scrub = study_scrubbers[sid]
            report_out.append(
                {
                    "study_id": sid,
                    "patient_id": study_patient[sid],
                    "findings": scrub(r["findings"]),
                    "impression": scrub(r["impression"]),
                }
            )

    manifest = pd.DataFrame(manifest_rows, columns=list(MANIFEST_COLUMNS)).sort_values(
        "study_id", kind="stable"
    )

    def scrub_token(token: str) -> str:
        if _PATH_DATE_RE.fullmatch(token):
            return "[DATE]"  # exporters name folders after the study date
        return path_table.get(token.lower(), token)

    def scrub_path(rel: str) -> str:
        return re.sub(r"[^/\\._\-\s]+", lambda m: scrub_token(m.group(0)), rel)

    quarantine = pd.DataFrame(
        [
            {
                "path": scrub_path(o.path) if not o.path.startswith("reports.csv:") else o.path,
                "rule": o.rule,
                "message": o.message,
            }
            for o in [*outcomes, *report_quarantine]
            if o.status == "quarantined"
        ],
        columns=["path", "rule", "message"],
    ).sort_values(["path", "rule"], kind="stable")
    skipped = pd.DataFrame(
        [
            {"path": scrub_path(o.path), "reason": o.rule, "message": o.message}
            for o in outcomes
            if o.status == "skipped"
        ],
        columns=["path", "reason", "message"],
    ).sort_values(["path"], kind="stable")
    reports_frame = pd.DataFrame(
        report_out, columns=["study_id", "patient_id", "findings", "impression"]
    ).sort_values("study_id", kind="stable")
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out / "manifest.csv", manifest)
    write_csv_atomic(out / "quarantine.csv", quarantine)
    write_csv_atomic(out / "skipped.csv", skipped)
    write_csv_atomic(out / "reports.csv", reports_frame)
    write_text_atomic(out / FINGERPRINT_FILE, fingerprint + "\n")
    # The stage fully rewrites its outs: volumes of studies no longer in the manifest go.
    if volumes_dir.is_dir():
        for stale in volumes_dir.glob("*.nii.gz"):
            if stale.name.removesuffix(".nii.gz") not in used_ids:
                stale.unlink()

    file_status = Counter(o.status for o in outcomes)
    n_quarantined_studies = sum(quarantined_studies.values())
    n_orphans = len(report_quarantine)
    units = len(studies) + n_orphans
    share = (n_quarantined_studies + n_orphans) / units if units else 1.0
    summary: dict[str, Any] = {
        "files_in": n_inputs,
        "files_used": file_status["used"],
        "files_skipped": dict(sorted(Counter(o.rule for o in outcomes if o.status == "skipped").items())),
        "files_quarantined": dict(
            sorted(Counter(o.rule for o in outcomes if o.status == "quarantined").items())
        ),
        "studies_found": len(studies),
        "studies_used": len(manifest_rows),
        "studies_quarantined": dict(sorted(quarantined_studies.items())),
        "reports_in": len(reports),
        "reports_used": len(report_out),
        "reports_quarantined": dict(sorted(Counter(o.rule for o in report_quarantine).items())),
        "quarantine_share": round(share, 6),
        "max_quarantine_share": cfg.max_quarantine_share,
        "passed": bool(units) and share <= cfg.max_quarantine_share,
        "key_fingerprint": fingerprint,
    }
    accounted = (
        summary["files_used"]
        + sum(summary["files_skipped"].values())
        + sum(summary["files_quarantined"].values())
    )
    if accounted != summary["files_in"]:  # a bug, never a data problem: refuse to publish wrong counts
        raise RuntimeError(
            f"ingest accounting error: {summary['files_in']} files in, {accounted} accounted for"
        )
    unknown = set(summary["files_quarantined"]) - set(RULES)
    if unknown:
        raise RuntimeError(f"ingest used undocumented rule(s) {sorted(unknown)}")
    log.info(
        "ingest: %d files in, %d used, %d skipped, %d quarantined; %d/%d studies used; quarantine share %.3f",
        summary["files_in"],
        summary["files_used"],
        sum(summary["files_skipped"].values()),
        sum(summary["files_quarantined"].values()),
        summary["studies_used"],
        summary["studies_found"],
        share,
    )
    return summary


def check_share(summary: dict[str, Any]) -> None:
    """Raise QuarantineShareExceeded with a clear message when the batch must fail."""
    if not summary["passed"]:
        if summary["studies_found"] == 0 and summary["reports_in"] == 0:
            raise QuarantineShareExceeded("no study found in the drop: nothing to ingest")
        raise QuarantineShareExceeded(
            f"quarantined share {summary['quarantine_share']:.1%} exceeds max_quarantine_share="
            f"{summary['max_quarantine_share']:.0%}; see quarantine.csv for the reasons "
            f"({', '.join(f'{k}: {v}' for k, v in summary['studies_quarantined'].items()) or 'orphan reports'})"
        )
