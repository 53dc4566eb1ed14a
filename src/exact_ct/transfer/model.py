"""The fine-tuning network: the EXACT trunk (pretrained or fresh) with a new one-channel lesion head.

Design (docs/transfer.md compares the options): the new head sits where the 18 full-resolution anomaly
logits were, on the anomaly decoder's features, which already fuse encoder skips with the organ decoder.
Optionally the frozen pretrained model's 18 anomaly maps are concatenated to those features, so the
head can start from what the pretrained model already localises. Segmentation trains the head's map
voxel-wise; classification pools it inside an organ region (top-k mean, as in pretraining).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.blocks import Convolution
from torch import nn

from exact_ct.model.config import NetworkConfig
from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage
from exact_ct.model.pooling import topk_mean
from exact_ct.schema import ABNORMALITIES, NUM_ORGAN_CLASSES

#: Channels the frozen pretrained model adds to the head's input when ``maps_input`` is on.
N_MAPS = len(ABNORMALITIES)
HEAD_BIAS = -4.0  # sigmoid ~0.02, as the pretrained anomaly heads: lesions are a small share of voxels


class TransferNet(nn.Module):
    """ExactNet trunk whose full-resolution anomaly head is replaced by a new head.

    ``forward(x, extra)`` returns (B, 1, X, Y, Z) lesion logits; ``extra`` (B, n_extra, X, Y, Z) are the
    pretrained anomaly maps when the head was built with ``n_extra > 0``.
    """

    def __init__(
        self, network: NetworkConfig, n_extra: int = 0, trunk: ExactNet | None = None, in_channels: int = 1
    ) -> None:
        super().__init__()
        self.network = network
        self.n_extra = n_extra
        self.trunk = trunk if trunk is not None else ExactNet(network, in_channels)
        # The trunk's 18-map head is replaced, so its forward returns the decoder's features there.
        self.trunk.anomaly_head_full = nn.Identity()  # type: ignore[assignment]
        feat = (network.anomaly_channels or network.channels)[0]
        self.head = nn.Sequential(
            Convolution(3, feat + n_extra, feat, kernel_size=3, norm=network.norm),
            Convolution(3, feat, 1, kernel_size=1, conv_only=True),
        )
        last = self.head[-1]
        conv = last.conv if hasattr(last, "conv") else last
        nn.init.constant_(conv.bias, HEAD_BIAS)  # type: ignore[union-attr, arg-type]

    @property
    def encoder(self) -> nn.ModuleList:
        return self.trunk.encoder

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.trunk(x).anomaly_logits_full
        if self.n_extra:
            if extra is None or extra.shape[1] != self.n_extra:
                raise ValueError(f"this head expects {self.n_extra} extra input channels")
            feats = torch.cat([feats, extra.to(feats.dtype)], dim=1)
        return self.head(feats)


#: Trunk parts that ``init=pretrained`` may copy, by ExactNet module-name prefix.
TRUNK_PARTS: dict[str, tuple[str, ...]] = {
    "encoder": ("encoder.",),
    "organ_decoder": ("organ_up.", "organ_dec.", "organ_head."),
    "anomaly_decoder": (
        "anomaly_in.",
        "anomaly_up.",
        "anomaly_dec.",
        "anomaly_head_full.",
        "anomaly_head_half.",
    ),
}


def build_net(
    network: NetworkConfig,
    base: ModelPackage | None,
    *,
    pretrained: bool,
    maps_input: bool,
    seed: int,
    in_channels: int = 1,
    parts: tuple[str, ...] = tuple(TRUNK_PARTS),
) -> TransferNet:
    """A TransferNet seeded by ``seed``; ``pretrained`` copies the trunk ``parts`` of ``base`` (the rest
    keeps the seeded random initialisation)."""
    torch.manual_seed(seed)
    trunk = ExactNet(network, in_channels)
    if pretrained:
        if base is None:
            raise ValueError("init=pretrained needs the pretrained package")
        unknown = sorted(set(parts) - set(TRUNK_PARTS))
        if unknown:
            raise ValueError(f"unknown trunk parts {unknown}; expected some of {sorted(TRUNK_PARTS)}")
        prefixes = tuple(p for part in parts for p in TRUNK_PARTS[part])
        state = {k: v for k, v in base.net.state_dict().items() if k.startswith(prefixes)}
        trunk.load_state_dict({**trunk.state_dict(), **state})
    return TransferNet(network, N_MAPS if maps_input else 0, trunk)


def freeze_encoder(net: TransferNet) -> None:
    """Stop gradients into the shared encoder (the decoders and head keep learning)."""
    for p in net.encoder.parameters():
        p.requires_grad_(False)


def region_mask(organs: np.ndarray, region: tuple[int, ...]) -> np.ndarray:
    """(N, x, y, z) float32 weights: 1 inside ``region`` organ ids (everywhere when empty)."""
    if not region:
        return np.ones(organs.shape, np.float32)
    bad = [o for o in region if not 0 <= int(o) < NUM_ORGAN_CLASSES]
    if bad:
        raise ValueError(f"finetune.region: organ ids {bad} outside 0..{NUM_ORGAN_CLASSES - 1}")
    return np.isin(organs, list(region)).astype(np.float32)


def pooled_probability(logits: torch.Tensor, region: torch.Tensor, k: int) -> torch.Tensor:
    """Study probability (B,): mean of the k highest sigmoid voxels inside the region (organ-confined MIL)."""
    w = region.unsqueeze(1) if region.dim() == logits.dim() - 1 else region
    maps = logits.float().sigmoid() * w
    return topk_mean(maps, k, mass=w.flatten(2).sum(-1))[:, 0]
