"""Series completeness rules of ingest: a partly copied series, or one split across studies, is never used.

Geometry alone misses a series whose last slices never arrived (no gap is left between the slices that
are there) and a series whose files carry two accession numbers (each half looks like a short study).
Rules ``incomplete_series`` and ``split_series`` (exact_ct.ingest.qc.RULES).
The headers say more: ``InstanceNumber`` runs without gaps through a complete single-frame series, and
``ImagesInAcquisition`` (when the scanner writes it) is at most the number of images the series holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence

from exact_ct.ingest.headers import FileHeader


def _incomplete(members: Sequence[FileHeader]) -> str:
    """Why a single-frame series is incomplete ('' when nothing says so)."""
    if any(h.multiframe for h in members):
        return ""
    numbers = [h.instance_number for h in members]
    if all(n is not None for n in numbers):
        present = set(numbers)
        lo, hi = min(present), max(present)  # type: ignore[type-var]
        if len(present) < hi - lo + 1:  # type: ignore[operator]
            return (
                f"InstanceNumber has gaps: {len(present)} of the {hi - lo + 1} numbers from {lo} to {hi} "  # type: ignore[operator]
                "present (a partly copied series)"
            )
    declared = [h.images_in_acquisition for h in members if h.images_in_acquisition]
    if declared and len(members) < max(declared):  # type: ignore[type-var]
        return (
            f"{len(members)} image(s), but ImagesInAcquisition says {max(declared)} "  # type: ignore[type-var]
            "(a partly copied series)"
        )
    return ""


def incomplete_series(studies: Mapping[Hashable, Sequence[FileHeader]]) -> dict[str, tuple[str, str]]:
    """``{rel: (rule, message)}`` for every file of a series that is split across studies or incomplete.

    ``studies`` maps each study's key to its DICOM headers. Series are told apart by SeriesInstanceUID;
    files without one are left to the geometry rules. Messages carry counts only, never header values.
    """
    where: dict[str, set[Hashable]] = defaultdict(set)
    by_series: dict[tuple[Hashable, str], list[FileHeader]] = defaultdict(list)
    for key, headers in studies.items():
        for h in headers:
            if h.series_uid:
                where[h.series_uid].add(key)
                by_series[(key, h.series_uid)].append(h)
    out: dict[str, tuple[str, str]] = {}
    for (_key, uid), members in by_series.items():
        if len(where[uid]) > 1:
            msg = f"the series' files are spread over {len(where[uid])} studies (accession numbers)"
            out.update((h.rel, ("split_series", msg)) for h in members)
            continue
        reason = _incomplete(members)
        if reason:
            out.update((h.rel, ("incomplete_series", reason)) for h in members)
    return out
