"""Training step time with the real data pipeline vs the same batches from memory, and peak memory.

Builds a toy hospital on the active train profile's model grid (build_dataset from params.yaml), then times
``--steps`` optimisation steps twice with the same network and seed: (a) pulling batches through the
configured pipeline (StudyDataset + MONAI transforms + DataLoader, workers and in-memory caching as in
the profile; ``--from-disk`` forces npz loading each step), (b) replaying the very same collated batches
from a Python list. The ratio a/b is the loader overhead (goal <= 1.2). Prints one line to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401  (the repository root first on sys.path: tests.support, stages)

os.environ.setdefault("EXACT_MODE", "test")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as stages/train.py: no busy-waiting threads
REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--from-disk", action="store_true", help="load npz every step (no in-memory cache)")
    ap.add_argument("--quick", action="store_true", help="tiny grid and network (smoke run)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from exact_ct.config import section
    from exact_ct.dataset.build import build_dataset, load_index, load_plan
    from exact_ct.dataset.config import BuildDatasetConfig
    from exact_ct.model.losses import OrganLoss
    from exact_ct.model.network import ExactNet
    from exact_ct.model.package import make_pool
    from exact_ct.training.config import TrainConfig
    from exact_ct.training.data import EpochSampler, StudyDataset, collate
    from exact_ct.training.loop import step_losses
    from tests.support.toy import make_toy_interim

    bcfg = section(BuildDatasetConfig, "build_dataset", args.params)
    tcfg = section(TrainConfig, "train", args.params)
    profile = tcfg.active()
    grid = bcfg.grid()
    size = tuple(int(v) for v in (grid.size_xyz or (64, 48, 48)))
    spacing = tuple(float(v) for v in (grid.spacing_xyz_mm or (6.0, 6.0, 6.0)))
    if args.quick:
        size, args.steps, args.studies = (32, 24, 24), 6, 4
        profile = dataclasses.replace(
            profile,
            network=dataclasses.replace(profile.network, channels=(4, 8, 16), organ_deep_supervision=1),
        )
    if args.from_disk:
        profile = dataclasses.replace(profile, cache_in_memory=False)
    profiles = {
        bcfg.profile: {
            **dict(bcfg.profiles.get(bcfg.profile, {})),
            "spacing_xyz_mm": list(spacing),
            "size_xyz": list(size),
            "size_multiple": 8,
        }
    }
    bcfg = dataclasses.replace(bcfg, profiles=profiles, workers=1)
    torch.set_num_threads(max(1, profile.threads))
    device = torch.device("cuda" if profile.device != "cpu" and torch.cuda.is_available() else "cpu")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_toy_interim(root, "bench", args.studies, seed=0, shape=size, spacing=spacing[0])
        build_dataset(bcfg, ["bench"], root / "interim", root / "ds", root / "rep")
        rows, plan = load_index(root / "ds"), load_plan(root / "ds")
        ds = StudyDataset(
            rows, root / "ds", plan, profile.augment, seed=0, cache_in_memory=profile.cache_in_memory
        )

        def loader() -> DataLoader:
            sampler = EpochSampler(len(ds), 0, 0)
            n = -(-args.steps * profile.batch_size // len(ds))
            sampler_idx = [i for _ in range(n) for i in sampler.indices()][: args.steps * profile.batch_size]
            return DataLoader(
                ds,
                batch_size=profile.batch_size,
                sampler=sampler_idx,
                num_workers=profile.workers,
                collate_fn=collate,
            )

        def run(batches_iter) -> float:  # seconds per step, excluding the first (warm-up) step
            torch.manual_seed(0)
            net = ExactNet(profile.network, plan.in_channels).to(device)
            pool = make_pool(profile.pooling, plan.spacing_xyz_mm).to(device)
            opt = torch.optim.AdamW(net.parameters(), lr=profile.lr)
            organ_loss, pw = OrganLoss(), torch.ones(18, device=device)
            times = []
            t = time.perf_counter()
            for batch in batches_iter:
                loss, _, _ = step_losses(net, pool, organ_loss, batch, profile, pw, device, "none", True, 1.0)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.perf_counter()
                times.append(now - t)
                t = now
            return float(np.mean(times[1:]))

        memory_batches = list(loader())
        t_mem = run(memory_batches)
        t_pipe = run(loader())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f", GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if device.type == "cuda" else ""
    print(
        f"grid {size} spacing {spacing} batch {profile.batch_size} workers {profile.workers} cache_in_memory {profile.cache_in_memory} "
        f"channels {profile.network.channels}: pipeline {t_pipe:.3f} s/step, memory {t_mem:.3f} s/step, "
        f"peak RSS {peak_mb:.0f} MB{gpu}, {torch.get_num_threads()} threads",
        file=sys.stderr,
    )
    print(
        f"train_step: {t_pipe:.3f} s/step (ratio {t_pipe / t_mem:.2f} vs same batches from memory; peak RSS {peak_mb:.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
