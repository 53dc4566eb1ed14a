"""Speed of the intensity mask backend on a 512x512x300 chest CT on one core, against TotalSegmentator's CPU time.

Anchor: no CPU time for TotalSegmentator's own ``--fast`` (3 mm) model was found in its README or paper;
the nearest published figure is 55 s on CPU (Intel i9-10900X) for "Abdominal organs TS2 - quick (3 mm)",
a 3 mm nnU-Net model trained on the TotalSegmentator v2 data, in 3D Slicer's MONAI Auto3DSeg model test
results (github.com/lassoan/SlicerMONAIAuto3DSeg, release ModelsTestResults). The ratio is anchor / ours.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, as the goal states

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ANCHOR_S = 55.0


def make_volume(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic chest CT (exact_ct.synth) resampled (nearest) to ``shape``, with its affine."""
    from scipy import ndimage

    from exact_ct.synth import render_study

    study = render_study(0, seed=11)
    zoom = [n / s for n, s in zip(shape, study.hu.shape, strict=True)]
    hu = ndimage.zoom(study.hu, zoom, order=0)
    affine = study.affine.copy()
    affine[:3, :3] = affine[:3, :3] / np.asarray(zoom)[None, :]
    return hu.astype(np.int16), affine


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="256x256x150 instead of 512x512x300")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from exact_ct.masks.intensity import segment

    shape = (256, 256, 150) if args.quick else (512, 512, 300)
    hu, affine = make_volume(shape)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        labels = segment(hu, affine)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(
        f"shape {shape}, spacing {np.round(np.abs(np.diag(affine)[:3]), 2)} mm, times {np.round(times, 2)} s, "
        f"organs present {sorted(set(np.unique(labels)))}",
        file=sys.stderr,
    )
    print(
        f"mask_speed: {best:.2f} s per {'x'.join(map(str, shape))} volume on 1 core "
        f"(ratio {ANCHOR_S / best:.2f} vs TotalSegmentator-data 3 mm model 55 s on CPU, Slicer test results)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
