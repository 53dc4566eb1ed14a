"""Ingest a hospital drop (DICOM and/or NIfTI + reports.csv) into canonical de-identified volumes.

Writes OUT_DIR/volumes/<study_id>.nii.gz (RAS+, int16 HU), manifest.csv, quarantine.csv (path, rule,
message), skipped.csv, de-identified reports.csv and summary.json. Exits non-zero when the share of
quarantined studies exceeds `max_quarantine_share` (params.yaml, section `ingest`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "drop", type=Path, metavar="DROP_DIR", help="the drop folder (reports.csv, dicom/, nifti/)"
    )
    p.add_argument("out", type=Path, metavar="OUT_DIR", help="output folder")
    p.add_argument("--workers", type=int, default=None, help="processes (default: params `ingest.workers`)")
    p.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params.yaml to read the `ingest` section from (default: ./params.yaml if present, else defaults)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    from exact_ct.config import section
    from exact_ct.ingest import IngestConfig, QuarantineShareExceeded, check_share, ingest_drop
    from exact_ct.io import write_json_atomic

    params = (
        args.params
        if args.params is not None
        else (Path("params.yaml") if Path("params.yaml").exists() else None)
    )
    cfg = section(IngestConfig, "ingest", params) if params is not None else IngestConfig()
    if args.workers is not None:
        cfg = dataclasses.replace(cfg, workers=args.workers)
    # Batches ingested side by side (OUT_DIR's siblings) must share the pseudonymisation key.
    summary = ingest_drop(args.drop, args.out, cfg, progress=not args.no_progress, key_peers=args.out.parent)
    write_json_atomic(args.out / "summary.json", summary)
    print(
        f"ingest: {summary['studies_used']}/{summary['studies_found']} studies -> {args.out}; "
        f"{summary['files_in']} files in = {summary['files_used']} used + "
        f"{sum(summary['files_skipped'].values())} skipped + {sum(summary['files_quarantined'].values())} quarantined"
    )
    try:
        check_share(summary)
    except QuarantineShareExceeded as e:
        print(f"exact ingest: FAILED: {e}", file=sys.stderr)
        return 1
    return 0
