"""Cost of one training step without running it: FLOPs and saved activations on PyTorch's meta device.

Used to size the ``gpu`` profile on a machine without a GPU (docs/model.md). The meta device executes
shapes only, so a 208x160x144 step is counted in seconds on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from exact_ct.model.config import NetworkConfig
from exact_ct.model.network import ExactNet, count_parameters


@dataclass(frozen=True)
class StepCost:
    flops: float  # forward + backward, per step
    activation_bytes: float  # tensors saved for backward, per step, at the given element size
    parameters: int


def step_cost(
    network: NetworkConfig, size_xyz: tuple[int, int, int], batch_size: int, bytes_per_element: int = 2
) -> StepCost:
    """FLOPs (forward + backward) and saved-activation bytes of one training step of :class:`ExactNet`.

    ``bytes_per_element=2`` models bf16 autocast activations (norm statistics stay fp32, a small error).
    """
    with torch.device("meta"):
        net = ExactNet(network)
        x = torch.zeros(batch_size, 1, *size_xyz)
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
