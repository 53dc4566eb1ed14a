"""Typed configuration of the EXACT network and its organ-confined pooling (params.yaml `train.profiles.*.model`)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Backbones this package knows. ``residual``: MONAI ResidualUnit blocks (default, best on CPU);
#: ``plain``: MONAI Convolution blocks only (lighter, no skip inside a block).
BACKBONES = ("residual", "plain")


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the shared encoder and the two decoders.

    Attributes:
        backbone: one of :data:`BACKBONES`.
        channels: feature channels per encoder level (full resolution first); each further level halves
            the spatial size, so the input size must be divisible by ``2 ** (len(channels) - 1)``.
        anomaly_channels: channels of the anomaly decoder per level; empty means the same as ``channels``.
        num_res_units: convolutions per residual block (``residual`` backbone only).
        norm: MONAI norm name (``instance`` works with batch size 1 on CPU).
        dropout: dropout probability inside blocks (0 keeps training bit-reproducible and cheap).
        detach_organ_features: the anomaly decoder reads the organ decoder's features without sending
            gradients back into it. Measured at initialisation on the demo data: the MIL loss's gradient
            norm was 4x the organ loss's (17.5 vs 4.1), and without the detach the organ decoder had not
            learnt any organ but the body after 6 epochs.
        organ_deep_supervision: extra organ heads on the organ decoder's next coarser levels (half,
            quarter, ... resolution), trained against the pseudo masks at that scale (nnU-Net's deep
            supervision); 0 = only the full-resolution head. Inference uses the full-resolution head.
    """

    backbone: str = "residual"
    channels: tuple[int, ...] = (8, 16, 32, 64)
    anomaly_channels: tuple[int, ...] = ()
    num_res_units: int = 1
    norm: str = "instance"
    dropout: float = 0.0
    detach_organ_features: bool = True
    organ_deep_supervision: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"network.backbone {self.backbone!r} unknown; expected one of {BACKBONES}")
        if len(self.channels) < 2:
            raise ValueError("network.channels needs at least two levels (full and half resolution)")
        if self.anomaly_channels and len(self.anomaly_channels) != len(self.channels):
            raise ValueError("network.anomaly_channels must have as many levels as network.channels")
        if not 0 <= self.organ_deep_supervision <= len(self.channels) - 2:
            raise ValueError(
                f"network.organ_deep_supervision must be 0..{len(self.channels) - 2} "
                "(one head per organ decoder level below full resolution)"
            )

    @property
    def divisor(self) -> int:
        """Input sizes must be a multiple of this."""
        return 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class PoolingConfig:
    """Organ-confined multiple-instance pooling.

    Attributes:
        k_half: top-k voxels averaged on the half-resolution maps during training (EXACT: 6).
        k_full: top-k voxels averaged on the full-resolution maps during training (EXACT: 48).
        k_test: top-k voxels averaged on the full-resolution maps at validation/test/inference (EXACT: 3).
        confine: multiply every map by its organ region; ``False`` is the ablation without confinement.
        detach_organs: stop the MIL loss from reshaping the organ segmentation through the region weights.
        regions: per-abnormality overrides of the organ ids of schema.CONFINEMENT_REGIONS (name -> ids).
        margins_mm: per-abnormality overrides of the margin (mm) its confinement region is dilated by.
        pool_logits: pool the map *logits* (region applied as ``+ log w``) and take the sigmoid of the
            top-k mean, instead of pooling sigmoid probabilities ``sigmoid * w``. The BCE gradient on a
            pooled logit is ``p - y`` for negatives and positives alike; pooled probabilities of maps that
            start near 0 give negative bags almost no gradient (``~p``), so the maps rise everywhere.
    """

    k_half: int = 6
    k_full: int = 48
    k_test: int = 3
    confine: bool = True
    detach_organs: bool = True
    regions: dict[str, list[int]] = field(default_factory=dict)
    margins_mm: dict[str, float] = field(default_factory=dict)
    pool_logits: bool = False
