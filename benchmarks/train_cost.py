"""Cost of one training step without running it: FLOPs and saved activations on PyTorch's meta device.

Sizes the ``gpu`` profile on a machine without a GPU (docs/model.md section 7, the FLOPs / step and saved
activations / step columns). For each train profile in params.yaml (the build_dataset grid profile of the
same name gives the grid and the input channels) it builds :class:`ExactNet` on the meta device, runs one
forward + backward of a ``batch_size`` batch under FlopCounterMode and counts the tensors saved for
backward. The meta device executes shapes only, so a 208x160x144 step is counted in seconds on a laptop.
Activations are counted at 2 bytes an element under bf16/fp16 autocast (norm statistics stay fp32, a
small error), else 4. Prints one line to stdout.

    .venv/bin/python benchmarks/train_cost.py [--profile gpu] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from exact_ct.model.config import NetworkConfig

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class StepCost:
    flops: float  # forward + backward, per step
    activation_bytes: float  # tensors saved for backward, per step, at the given element size
    parameters: int


def step_cost(
    network: NetworkConfig,
    size_xyz: tuple[int, int, int],
    batch_size: int,
    in_channels: int = 1,
    bytes_per_element: int = 2,
) -> StepCost:
    """FLOPs (forward + backward) and saved-activation bytes of one training step of ``ExactNet``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from exact_ct.model.network import ExactNet, count_parameters

    with torch.device("meta"):
        net = ExactNet(network, in_channels=in_channels)
        x = torch.zeros(batch_size, in_channels, *size_xyz)
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel()
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
        loss = out.organ_logits.sum() + out.anomaly_logits_full.sum() + out.anomaly_logits_half.sum()
        loss.backward()
    return StepCost(float(counter.get_total_flops()), float(saved * bytes_per_element), count_parameters(net))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--profile", action="append", help="train profile(s) to count (default: all)")
    ap.add_argument("--quick", action="store_true", help="the cpu-demo profile only")
    args = ap.parse_args()

    from exact_ct.config import section
    from exact_ct.dataset.config import BuildDatasetConfig
    from exact_ct.training.config import TrainConfig

    bcfg = section(BuildDatasetConfig, "build_dataset", args.params)
    tcfg = section(TrainConfig, "train", args.params)
    names = args.profile or (["cpu-demo"] if args.quick else list(tcfg.profiles))
    parts = []
    t0 = time.perf_counter()
    for name in names:
        profile = dataclasses.replace(tcfg, profile=name).active()
        grid = dataclasses.replace(bcfg, profile=name).grid()
        if grid.size_xyz is None:
            raise SystemExit(f"build_dataset.profiles.{name}.size_xyz is null: no fixed grid to count")
        size = (int(grid.size_xyz[0]), int(grid.size_xyz[1]), int(grid.size_xyz[2]))
        half = profile.amp in ("bf16", "fp16")
        cost = step_cost(
            profile.network,
            size,
            profile.batch_size,
            in_channels=max(1, len(grid.windows_hu)),
            bytes_per_element=2 if half else 4,
        )
        parts.append(
            f"{name} {'x'.join(map(str, size))} batch {profile.batch_size}: "
            f"{cost.flops / 1e12:.3g} TFLOP/step (fwd+bwd), "
            f"{cost.activation_bytes / 2**30:.2f} GiB saved activations ({profile.amp if half else 'fp32'}), "
            f"{cost.parameters / 1e6:.3g} M params"
        )
    print(f"train_cost: {'; '.join(parts)} (meta device, counted in {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
