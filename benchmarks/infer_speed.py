"""`exact infer` wall time per study on CPU at the demo grid (ingest QC + pseudo masks + model + report + files).

Anchor: the issue's goal of 10 s per study on CPU. A synthetic demo-profile study (NIfTI) goes through
``run_infer`` with a randomly initialised package whose network and grid are the ``cpu-demo`` profiles
of params.yaml (speed does not depend on the weights). The package is loaded once, as a server would;
the figure is the median of the timed runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EXACT_MODE", "test")
GOAL_S = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timed run instead of three")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()

    import torch

    from exact_ct.config import from_dict, section
    from exact_ct.dataset.config import BuildDatasetConfig
    from exact_ct.dataset.grid import GridPlan
    from exact_ct.evaluation.infer import run_infer
    from exact_ct.io import save_nifti
    from exact_ct.model.network import ExactNet
    from exact_ct.model.package import ModelPackage, load_package, save_package
    from exact_ct.synth import render_study
    from exact_ct.training.config import TrainConfig

    torch.set_num_threads(2)
    grid = (
        section(BuildDatasetConfig, "build_dataset", args.params).grid()
        if args.params.exists()
        else from_dict(BuildDatasetConfig, {}).grid()
    )
    profile = (
        section(TrainConfig, "train", args.params).active()
        if args.params.exists()
        else TrainConfig().active()
    )
    plan = GridPlan(
        tuple(grid.spacing_xyz_mm or (4.0, 4.0, 4.0)),  # type: ignore[arg-type]
        tuple(grid.size_xyz or (64, 64, 80)),  # type: ignore[arg-type]
        windows_hu=tuple(tuple(w) for w in grid.windows_hu),  # type: ignore[misc]
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        torch.manual_seed(0)
        save_package(
            ModelPackage(ExactNet(profile.network, plan.in_channels), profile.network, profile.pooling, plan),
            t / "model",
        )
        pkg = load_package(t / "model")
        study = render_study(0, 7, "demo")
        save_nifti(study.hu, study.affine, t / "study.nii.gz")
        runs = 1 if args.quick else 3
        times: list[float] = []
        steps: dict[str, list[float]] = {}
        for i in range(runs + 1):
            t0 = time.perf_counter()
            res = run_infer(t / "study.nii.gz", t / "model", t / f"out{i}", package=pkg)
            if i > 0:
                times.append(time.perf_counter() - t0)
                for name, sec in res.timings.items():
                    steps.setdefault(name, []).append(sec)
        med = statistics.median(times)
    print(
        f"volume {study.hu.shape}, grid {plan.size_xyz} at {plan.spacing_xyz_mm} mm, runs {[round(x, 2) for x in times]}",
        file=sys.stderr,
    )
    # Per-step medians (they need not add up to the median total exactly).
    print(
        "steps (median s): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in steps.items()),
        file=sys.stderr,
    )
    if hasattr(os, "getloadavg"):  # the machine is shared: a loaded CPU slows every step
        print(f"load average at the end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(f"infer_speed: {med:.2f} s/study (ratio {med / GOAL_S:.2f} vs 10 s/study goal on CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
