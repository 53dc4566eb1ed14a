"""DVC stage `train`: dataset cache -> model package (models/<name>/), dvclive curves, resumable checkpoints.

Usage (paths come from dvc.yaml templating)::

    python -m stages.train --params params.yaml --dataset data/processed/build_dataset \
        --out models/candidate --reports reports/train --checkpoints data/checkpoints/train

``--checkpoints`` must survive a failed run: declare it in dvc.yaml as an out with ``persist: true``
(and ``cache: false``), so that after ``kill -9`` a rerun of ``dvc repro train`` resumes from
``last.pt``. Several processes (GPUs): params.yaml ``parallel.train_nproc_per_node: N`` reruns this
command under ``torchrun --standalone --nproc_per_node=N`` (DDP; rank 0 validates, logs and writes
checkpoints and the package).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stages.train", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dataset", type=Path, required=True, help="build_dataset output folder")
    parser.add_argument("--out", type=Path, required=True, help="model package folder, e.g. models/candidate")
    parser.add_argument("--reports", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    args = parser.parse_args(argv)

    # Before torch loads OpenMP: on a shared 2-core machine busy-waiting threads slowed steps 3-10x.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from exact_ct.parallel import load_parallel, torchrun_relaunch

    # params `parallel.train_nproc_per_node` > 1: this same command reruns under torchrun (DDP)
    nproc = load_parallel(args.params).train_nproc_per_node
    rc = torchrun_relaunch("stages.train", sys.argv[1:] if argv is None else argv, nproc)
    if rc is not None:
        return rc
    from exact_ct.config import load_params, section
    from exact_ct.logs import setup_logging
    from exact_ct.training.config import TrainConfig
    from exact_ct.training.loop import finish_distributed, train

    setup_logging()
    cfg = section(TrainConfig, "train", args.params)
    params = load_params(args.params)
    seed = int(cfg.seed if cfg.seed is not None else params.get("seed", 0))
    used = {"train": params.get("train"), "build_dataset": params.get("build_dataset"), "seed": seed}
    try:
        train(cfg, args.dataset, args.out, args.reports, args.checkpoints, seed=seed, params_used=used)
    finally:
        finish_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
