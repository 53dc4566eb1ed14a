"""Benchmark: 1,000 small studies through ingest -> report labels -> pseudo masks vs 100 (peak memory, throughput).

Each batch runs in a fresh child process that calls the three library entry points in turn, with the
parameters of params.yaml (2 workers). Studies are tiny DICOM series written with
``tests.support.dicom_series`` (48 x 48 x 12 voxels, 8 x 8 x 10 mm, one file per slice; exact_ct.synth's
full phantoms take ~1.3 s each to render, too slow for 1,000), each with a short report.
Peak memory = max(peak RSS of the child, peak RSS of its largest worker process), from getrusage.
Prints one line: ``load_studies: X studies/s (memory ratio R vs 100 studies)``; details go to stderr.
"""

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
import time
from pathlib import Path

import _repo  # noqa: F401  (the repository root first on sys.path: tests.support, stages)

REPO = Path(__file__).resolve().parents[1]
FINDINGS = (
    "No pleural effusion. Heart size is normal.",
    "Small right pleural effusion. No consolidation.",
    "Mild centrilobular emphysema. A 4 mm nodule in the right upper lobe.",
    "Minimal atelectasis at both lung bases. No lymphadenopathy.",
)


def make_drop(drop: Path, n: int) -> None:
    from tests.support.dicom_series import chest_phantom, write_series

    rows = []
    for i in range(n):
        write_series(
            drop / "dicom" / f"{i:05d}",
            chest_phantom(48, 48, 12, seed=i),
            pixel_spacing=(8.0, 8.0),
            slice_spacing=10.0,
            origin=(-190.0, -190.0, -60.0),
            accession=f"L{i:07d}",
            patient_id=f"Q{i:07d}",
        )
        rows.append((f"L{i:07d}", f"Q{i:07d}", FINDINGS[i % len(FINDINGS)], "See findings."))
    with open(drop / "reports.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["accession_number", "patient_id", "findings", "impression"])
        w.writerows(rows)
    (drop / "_COMPLETE").write_bytes(b"")


def child(drop: str, out: str) -> None:
    """Ingest, label and mask one batch in this fresh process; print counts, timings and peak RSS."""
    from exact_ct.config import section
    from exact_ct.ingest import IngestConfig, ingest_drop
    from exact_ct.masks import PseudoMasksConfig
    from exact_ct.masks.batch import run_batch
    from exact_ct.reports.batch import LabelConfig, label_table

    params = REPO / "params.yaml"
    os.chdir(REPO)  # parse_reports.rules_dir is relative to the repository
    o = Path(out)
    times = {}
    t0 = time.perf_counter()
    s_ing = ingest_drop(drop, o / "ingest", section(IngestConfig, "ingest", params), progress=False)
    times["ingest"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    s_lab = label_table(
        o / "ingest" / "reports.csv",
        o / "labels" / "labels.csv",
        quarantine_out=o / "labels" / "quarantine.csv",
        id_column="study_id",
        text_columns=["findings", "impression"],
        config=section(LabelConfig, "parse_reports", params),
    )
    times["labels"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    s_msk = run_batch(o / "ingest", o / "masks", section(PseudoMasksConfig, "pseudo_masks", params))
    times["masks"] = time.perf_counter() - t2
    times["total"] = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "studies_used": s_ing["studies_used"],
                "labelled": s_lab.labelled,
                "masks_attempted": s_msk["studies"],
                "masks_passed": s_msk["masks"],
                "seconds": times,
                "self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            }
        )
    )


def measure(n: int, work: Path) -> dict:
    drop, out = work / f"drop{n}", work / f"out{n}"
    t0 = time.perf_counter()
    make_drop(drop, n)
    print(f"{n} studies: drop written in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    res = subprocess.run(
        [sys.executable, __file__, "--child", str(drop), str(out)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "EXACT_MODE": os.environ.get("EXACT_MODE", "test")},
    )
    r = json.loads(res.stdout.strip().splitlines()[-1])
    if r["studies_used"] != n or r["labelled"] != n or r["masks_attempted"] != n:
        raise SystemExit(f"{n}-study batch: not every study went through: {r}")
    r["peak_mb"] = max(r["self_kb"], r["children_kb"]) / 1024  # Linux reports KiB
    r["studies_per_s"] = n / r["seconds"]["total"]
    sec = r["seconds"]
    print(
        f"{n} studies: ingest {sec['ingest']:.1f} s, labels {sec['labels']:.1f} s, masks {sec['masks']:.1f} s "
        f"({r['masks_passed']} masks passed QC), {r['studies_per_s']:.2f} studies/s; peak RSS main "
        f"{r['self_kb'] / 1024:.0f} MB, largest worker {r['children_kb'] / 1024:.0f} MB",
        file=sys.stderr,
    )
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("DROP", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--studies", type=int, default=1000, help="the large batch (default 1000)")
    parser.add_argument("--anchor", type=int, default=100, help="the anchor batch (default 100)")
    parser.add_argument("--quick", action="store_true", help="200 vs 20 studies")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    os.environ.setdefault("EXACT_MODE", "test")
    small, large = (20, 200) if args.quick else (args.anchor, args.studies)
    work = Path(tempfile.mkdtemp(prefix="load_studies_"))
    try:
        a = measure(small, work)
        b = measure(large, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"load_studies: {b['studies_per_s']:.2f} studies/s (memory ratio {b['peak_mb'] / a['peak_mb']:.2f} "
        f"vs {small} studies; peak {b['peak_mb']:.0f} MB vs {a['peak_mb']:.0f} MB, {large} studies)"
    )


if __name__ == "__main__":
    main()
