"""One forward pass turned into study-level probabilities through organ-confined pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from exact_ct.model.network import ExactNet, NetworkOutput
from exact_ct.model.pooling import OrganConfinedMILPool


@dataclass
class Prediction:
    """Probabilities of one forward pass.

    Attributes:
        probs: (B, 18) study-level probabilities (full-resolution maps pooled with ``k``).
        organ_probs: (B, 10, *S) softmax organ probabilities.
        maps: (B, 18, *S) sigmoid anomaly maps at full resolution.
        raw: the network's logits.
    """

    probs: torch.Tensor
    organ_probs: torch.Tensor
    maps: torch.Tensor
    raw: NetworkOutput


def predict(net: ExactNet, pool: OrganConfinedMILPool, image: torch.Tensor, k: int) -> Prediction:
    """Forward pass and pooling inside the *predicted* organs (what inference and validation use)."""
    out = net(image)
    organ_probs = out.organ_logits.float().softmax(1)
    maps = out.anomaly_logits_full.float().sigmoid()
    return Prediction(pool(pool.pool_input(out.anomaly_logits_full), organ_probs, k), organ_probs, maps, out)
