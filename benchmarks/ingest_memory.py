"""Benchmark: peak memory of ingest for a 200-study vs a 20-study batch of tiny studies (goal: flat)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _repo  # noqa: F401  (the repository root first on sys.path: tests.support, stages)


def make_drop(drop: Path, n: int) -> None:
    from tests.support.dicom_series import chest_phantom, write_series

    rows = []
    for i in range(n):
        write_series(
            drop / "dicom" / f"{i:04d}",
            chest_phantom(48, 48, 12, seed=i),
            accession=f"M{i:05d}",
            patient_id=f"P{i:05d}",
        )
        rows.append((f"M{i:05d}", f"P{i:05d}", "No effusion.", "Normal."))
    with open(drop / "reports.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["accession_number", "patient_id", "findings", "impression"])
        w.writerows(rows)


def child(drop: str, out: str, workers: int) -> None:
    """Run ingest in this fresh process; report the peak RSS of this process and of its workers."""
    from exact_ct.ingest import IngestConfig, ingest_drop

    summary = ingest_drop(drop, out, IngestConfig(workers=workers), progress=False)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"studies_used": summary["studies_used"], "self_kb": own, "children_kb": kids}))


def measure(n: int, workers: int, work: Path) -> dict:
    drop, out = work / f"drop{n}", work / f"out{n}"
    make_drop(drop, n)
    cmd = [sys.executable, __file__, "--child", str(drop), str(out), str(workers)]
    res = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "EXACT_MODE": "test"}
    )
    result = json.loads(res.stdout.strip().splitlines()[-1])
    if result["studies_used"] != n:
        raise SystemExit(f"{n}-study batch: only {result['studies_used']} studies used")
    result["peak_mb"] = max(result["self_kb"], result["children_kb"]) / 1024  # Linux reports KiB
    print(
        f"{n} studies: main {result['self_kb'] / 1024:.0f} MB, workers {result['children_kb'] / 1024:.0f} MB",
        file=sys.stderr,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs=3, metavar=("DROP", "OUT", "WORKERS"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="100 vs 10 studies")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    os.environ.setdefault("EXACT_MODE", "test")
    small, large = (10, 100) if args.quick else (20, 200)
    work = Path(tempfile.mkdtemp(prefix="ingest_memory_"))
    try:
        a = measure(small, args.workers, work)
        b = measure(large, args.workers, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"ingest_memory: {b['peak_mb']:.0f} MB peak RSS for {large} studies "
        f"(ratio {b['peak_mb'] / a['peak_mb']:.2f} vs {small}-study batch {a['peak_mb']:.0f} MB; goal flat ~1.00)"
    )


if __name__ == "__main__":
    main()
