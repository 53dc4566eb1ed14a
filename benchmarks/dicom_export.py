"""DICOM SEG export of `exact infer` on a clinical-size series: time, file sizes, frame counts.

A synthetic ``realistic``-profile study (512 x 512 images) is written as DICOM and ingested exactly as
`exact infer` ingests it; its true organ map and true lesion masks (on the canonical grid, as the model's
outputs are) are then exported with :func:`exact_ct.evaluation.dicom_export.write_segs`, which is the
step `exact infer` adds for a DICOM series (the SR is a few kB and takes no measurable time), once
uncompressed and once JPEG 2000 lossless (``--dicom-jpeg2000``). Prints the series size, the export times,
the size and frame count of each SEG, and checks that every pixel of the JPEG 2000 organ SEG equals the
organ label at its source pixel.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("EXACT_MODE", "test")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=0, help="synthetic study index (seed 20260427)")
    parser.add_argument("--quick", action="store_true", help="the small demo-profile study (a wiring check)")
    args = parser.parse_args()
    profile = "demo" if args.quick else "realistic"

    import highdicom as hd
    import numpy as np
    import pydicom

    from exact_ct.evaluation.dicom_export import FINDINGS_SEG, ORGANS_SEG, find_source_series, write_segs
    from exact_ct.evaluation.infer import ingest_one
    from exact_ct.ingest import IngestConfig
    from exact_ct.synth import render_study
    from exact_ct.synth.dicom import write_study_dicom

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        study = render_study(args.index, seed=20260427, profile=profile)
        files = write_study_dicom(study, t / "dicom")
        root = Path(os.path.commonpath([str(p) for p in files]))
        cfg = replace(IngestConfig(), require_report=False, workers=1)
        hu, affine, row = ingest_one(root, t / "work", cfg)
        if not np.allclose(affine, study.affine, atol=1e-3):
            print("ingest grid differs from the synthetic truth grid", file=sys.stderr)
            return 1
        source = find_source_series(t / "work" / "drop", str(row["series_uid_hash"]), cfg)
        first = source.datasets[0]
        size = f"{int(first.Rows)} x {int(first.Columns)}"
        print(f"series: {len(source.datasets)} images of {size}, canonical grid {hu.shape}")
        print(f"{len(study.lesions)} lesion masks: {', '.join(study.lesions)}")
        megabytes: dict[bool, float] = {}
        seconds_of: dict[bool, float] = {}
        for jpeg2000 in (False, True):
            out = t / ("j2k" if jpeg2000 else "plain")
            out.mkdir()
            t0 = time.perf_counter()
            summary = write_segs(
                out, source, study.organs, dict(study.lesions), affine, "benchmark", jpeg2000=jpeg2000
            )
            seconds = time.perf_counter() - t0
            seconds_of[jpeg2000] = seconds
            megabytes[jpeg2000] = (out / ORGANS_SEG).stat().st_size / 1e6
            kind = "JPEG 2000 lossless" if jpeg2000 else "Explicit VR Little Endian"
            print(f"{kind}: SEG export {seconds:.1f} s, max offset {summary['max_offset_voxels']} voxels")
            for name in (ORGANS_SEG, FINDINGS_SEG):
                p = out / name
                if p.exists():
                    ds = pydicom.dcmread(p, stop_before_pixels=True)
                    print(f"  {name}: {p.stat().st_size / 1e6:.1f} MB, {int(ds.NumberOfFrames)} frames")
        out = t / "j2k"
        seg = hd.seg.segread(out / ORGANS_SEG)
        uids = [str(ds.SOPInstanceUID) for ds in source.datasets]
        got = seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False)
        # the source pixel (row r, column c) of the image at canonical slice k is voxel (n-1-c, n-1-r, k)
        # for the synthetic writer's axial images (exact_ct.synth.geometry.canonical_to_dicom_slice)
        z = {
            str(ds.SOPInstanceUID): int(
                round((float(ds.ImagePositionPatient[2]) - affine[2, 3]) / affine[2, 2])
            )
            for ds in source.datasets
        }
        bad = sum(int((got[i] != study.organs[::-1, ::-1, z[u]].T).sum()) for i, u in enumerate(uids))
        print(f"organ SEG pixels differing from the organ map: {bad}")
    print(
        f"dicom_export: organ SEG {megabytes[True]:.2f} MB JPEG 2000 vs {megabytes[False]:.2f} MB uncompressed "
        f"(ratio {megabytes[True] / megabytes[False]:.3f}), export {seconds_of[False]:.1f} s / "
        f"{seconds_of[True]:.1f} s for {len(uids)} images of {size}; {bad} organ pixels differ"
    )
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
