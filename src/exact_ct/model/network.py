"""The EXACT network: shared 3D encoder, organ decoder, and an anomaly decoder fused with organ features."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from torch import nn

from exact_ct.model.config import NetworkConfig
from exact_ct.schema import ABNORMALITIES, NUM_ORGAN_CLASSES


@dataclass
class NetworkOutput:
    """What one forward pass returns (all logits; apply softmax/sigmoid outside).

    Attributes:
        organ_logits: (B, 10, X, Y, Z) organ class logits at full resolution.
        anomaly_logits_full: (B, 18, X, Y, Z) anomaly map logits at full resolution.
        anomaly_logits_half: (B, 18, X/2, Y/2, Z/2) anomaly map logits at half resolution.
        organ_logits_deep: organ logits at half, quarter, ... resolution (deep supervision heads;
            empty unless ``network.organ_deep_supervision`` > 0).
    """

    organ_logits: torch.Tensor
    anomaly_logits_full: torch.Tensor
    anomaly_logits_half: torch.Tensor
    organ_logits_deep: tuple[torch.Tensor, ...] = field(default_factory=tuple)


def _block(cfg: NetworkConfig, cin: int, cout: int, strides: int = 1) -> nn.Module:
    """One encoder/decoder block of the configured backbone (MONAI building blocks)."""
    if cfg.backbone == "residual":
        return ResidualUnit(
            spatial_dims=3,
            in_channels=cin,
            out_channels=cout,
            strides=strides,
            subunits=max(1, cfg.num_res_units),
            norm=cfg.norm,
            dropout=cfg.dropout or None,
        )
    return nn.Sequential(
        Convolution(3, cin, cout, strides=strides, norm=cfg.norm, dropout=cfg.dropout or None),
        Convolution(3, cout, cout, norm=cfg.norm, dropout=cfg.dropout or None),
    )


def _up(cin: int, cout: int) -> nn.Module:
    # Transposed convolution: learnable, exact factor 2, deterministic on CPU (nontrainable trilinear
    # upsampling has no deterministic backward on CUDA).
    return UpSample(3, cin, cout, scale_factor=2, mode="deconv")


class ExactNet(nn.Module):
    """Shared encoder + organ decoder + anomaly decoder (U-Net style skips), EXACT-like.

    The anomaly decoder receives, at every decoder level, the encoder skip *and* the organ decoder's
    features of the same scale (concatenation), so anomaly maps are computed knowing where the organs
    are. Heads: 10 organ logits at full resolution, 18 anomaly logits at half and full resolution.
    """

    def __init__(self, cfg: NetworkConfig | None = None, in_channels: int = 1) -> None:
        super().__init__()
        self.cfg = cfg = cfg or NetworkConfig()
        enc = list(cfg.channels)
        ano = list(cfg.anomaly_channels or cfg.channels)
        n = len(enc)
        self.encoder = nn.ModuleList(
            [_block(cfg, in_channels, enc[0])]
            + [_block(cfg, enc[i - 1], enc[i], strides=2) for i in range(1, n)]
        )
        # Organ decoder: level i (from n-2 down to 0) upsamples level i+1 and fuses the encoder skip.
        self.organ_up = nn.ModuleList([_up(enc[i + 1], enc[i]) for i in range(n - 1)])
        self.organ_dec = nn.ModuleList([_block(cfg, 2 * enc[i], enc[i]) for i in range(n - 1)])
        # Anomaly decoder: starts from the bottleneck, fuses encoder skip + organ decoder features.
        self.anomaly_in = _block(cfg, enc[n - 1], ano[n - 1])
        self.anomaly_up = nn.ModuleList([_up(ano[i + 1], ano[i]) for i in range(n - 1)])
        self.anomaly_dec = nn.ModuleList([_block(cfg, ano[i] + 2 * enc[i], ano[i]) for i in range(n - 1)])
        self.organ_head = Convolution(3, enc[0], NUM_ORGAN_CLASSES, kernel_size=1, conv_only=True)
        self.organ_heads_deep = nn.ModuleList(
            [
                Convolution(3, enc[i], NUM_ORGAN_CLASSES, kernel_size=1, conv_only=True)
                for i in range(1, 1 + cfg.organ_deep_supervision)
            ]
        )
        self.anomaly_head_full = Convolution(3, ano[0], len(ABNORMALITIES), kernel_size=1, conv_only=True)
        self.anomaly_head_half = Convolution(3, ano[1], len(ABNORMALITIES), kernel_size=1, conv_only=True)
        # Start the anomaly maps low (sigmoid ~0.02): most voxels are normal, and top-k pooling of maps
        # that start at 0.5 everywhere would give every study a probability of 0.5 and weak gradients.
        for head in (self.anomaly_head_full, self.anomaly_head_half):
            conv = head.conv if hasattr(head, "conv") else head
            assert isinstance(conv, nn.Conv3d) and conv.bias is not None
            nn.init.constant_(conv.bias, -4.0)

    def forward(self, x: torch.Tensor) -> NetworkOutput:
        div = self.cfg.divisor
        if any(s % div for s in x.shape[2:]):
            raise ValueError(f"input spatial size {tuple(x.shape[2:])} must be divisible by {div}")
        skips: list[torch.Tensor] = []
        h = x
        for block in self.encoder:
            h = block(h)
            skips.append(h)
        n = len(skips)
        organ_feats: list[torch.Tensor] = [torch.empty(0)] * n
        o = skips[-1]
        for i in range(n - 2, -1, -1):
            o = self.organ_dec[i](torch.cat([self.organ_up[i](o), skips[i]], dim=1))
            organ_feats[i] = o
        a = self.anomaly_in(skips[-1])
        half = a
        for i in range(n - 2, -1, -1):
            o_i = organ_feats[i].detach() if self.cfg.detach_organ_features else organ_feats[i]
            a = self.anomaly_dec[i](torch.cat([self.anomaly_up[i](a), skips[i], o_i], dim=1))
            if i == 1:
                half = a
        return NetworkOutput(
            organ_logits=self.organ_head(organ_feats[0]),
            anomaly_logits_full=self.anomaly_head_full(a),
            anomaly_logits_half=self.anomaly_head_half(half),
            organ_logits_deep=tuple(head(organ_feats[i + 1]) for i, head in enumerate(self.organ_heads_deep)),
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
