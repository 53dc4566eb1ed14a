"""Throughput of `exact synth`: demo studies (DICOM + reports + truth) written per second.

Anchor: 0.83 studies/s, i.e. 100 demo studies in 2 minutes on 2 cores (the issue's requirement).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ANCHOR = 100 / 120.0


def main(argv: list[str] | None = None) -> int:
    from exact_ct.synth.drop import DropConfig, write_drop

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--studies", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="10 studies")
    args = ap.parse_args(argv)
    n = 10 if args.quick else args.studies
    tmp = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    try:
        t0 = time.perf_counter()
        summary = write_drop(
            tmp / "out",
            DropConfig(studies=n, seed=args.seed, batch="bench"),
            workers=args.workers,
            progress=False,
        )
        elapsed = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (tmp / "out" / "drop" / "dicom").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rate = n / elapsed
    print(
        f"{n} studies, {summary['dicom_files']} DICOM files, {size / n / 1e6:.2f} MB DICOM per study, "
        f"{elapsed:.1f} s with {args.workers} workers on {os.cpu_count()} CPUs",
        file=sys.stderr,
    )
    print(
        f"synth_throughput: {rate:.2f} studies/s (ratio {rate / ANCHOR:.2f} vs anchor 0.83 studies/s = 100 studies in 2 min)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
