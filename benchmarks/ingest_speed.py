"""Benchmark: our ingest of one DICOM series vs the dcm2niix converter (time ratio and equality)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401  (the repository root first on sys.path: tests.support, stages)
import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TS_DICOM = REPO / ".." / "shared" / "data" / "ct" / "totalseg" / "example_ct_dicom"


def ours(series_dir: Path, work: Path) -> tuple[float, np.ndarray, np.ndarray]:
    from exact_ct.ingest import IngestConfig, ingest_drop

    drop = work / "drop"
    (drop / "dicom").mkdir(parents=True)
    # a copy, outside the timed part: ingest never follows links (they are quarantined as `symlink`)
    shutil.copytree(series_dir, drop / "dicom" / "s")
    cfg = IngestConfig(workers=1, require_report=False, max_quarantine_share=1.0)
    t0 = time.perf_counter()
    summary = ingest_drop(drop, work / "ours", cfg, progress=False)
    elapsed = time.perf_counter() - t0
    if summary["studies_used"] != 1:
        raise SystemExit(f"ingest did not produce the volume: {summary}")
    (vol,) = (work / "ours" / "volumes").glob("*.nii.gz")
    img = nib.load(vol)
    return elapsed, np.asanyarray(img.dataobj).astype(np.float64), img.affine


def dcm2niix(series_dir: Path, work: Path) -> tuple[float, np.ndarray, np.ndarray]:
    import dcm2niix as d2n

    out = work / "d2n"
    out.mkdir()
    t0 = time.perf_counter()
    subprocess.run(
        [d2n.bin, "-z", "y", "-b", "n", "-f", "vol", "-o", str(out), str(series_dir)],
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - t0
    img = nib.as_closest_canonical(nib.load(next(out.glob("*.nii.gz"))))
    return elapsed, img.get_fdata(dtype=np.float64), img.affine


def compare(name: str, series_dir: Path, repeats: int) -> tuple[float, float, float, float]:
    """Best-of-``repeats`` seconds for both tools, max |HU| difference, max affine difference (mm)."""
    t_ours, t_ref = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t, a, aff_a = ours(series_dir, Path(tmp))
            t_ours.append(t)
        with tempfile.TemporaryDirectory() as tmp:
            t, b, aff_b = dcm2niix(series_dir, Path(tmp))
            t_ref.append(t)
    if a.shape != b.shape:
        raise SystemExit(f"{name}: shapes differ, ours {a.shape} vs dcm2niix {b.shape}")
    hu_diff = float(np.abs(a - b).max())
    aff_diff = float(np.abs(aff_a - aff_b).max())
    print(
        f"{name}: ours {min(t_ours):.2f} s, dcm2niix {min(t_ref):.2f} s, ratio {min(t_ours) / min(t_ref):.2f}, "
        f"max HU diff {hu_diff:g}, max affine diff {aff_diff:.2e} mm, shape {a.shape}",
        file=sys.stderr,
    )
    return min(t_ours), min(t_ref), hu_diff, aff_diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 slices instead of 300, one repeat")
    parser.add_argument("--slices", type=int, default=None)
    args = parser.parse_args()
    os.environ.setdefault("EXACT_MODE", "test")  # synthetic data only: the insecure demo key is fine
    from tests.support.dicom_series import chest_phantom, write_series

    n = args.slices or (100 if args.quick else 300)
    repeats = 1 if args.quick else 2
    work = Path(tempfile.mkdtemp(prefix="ingest_speed_"))
    try:
        series = work / "synthetic"
        write_series(series, chest_phantom(512, 512, n, seed=0), pixel_spacing=(0.7, 0.7), slice_spacing=1.0)
        results = [compare(f"synthetic 512x512x{n}", series, repeats)]
        if TS_DICOM.is_dir():
            results.append(compare("TotalSegmentator J2K 512x512x20", TS_DICOM, repeats))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t_ours, t_ref, hu_diff, aff_diff = results[0]
    worst_hu = max(r[2] for r in results)
    worst_aff = max(r[3] for r in results)
    print(
        f"ingest_speed: {t_ours:.2f} s per 512x512x{n} series (ratio {t_ours / t_ref:.2f} vs dcm2niix {t_ref:.2f} s; "
        f"goal <= 1.50; max HU diff {worst_hu:g}, max affine diff {worst_aff:.1e} mm over {len(results)} series)"
    )


if __name__ == "__main__":
    main()
