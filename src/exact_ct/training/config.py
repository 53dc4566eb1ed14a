"""Typed configuration of the train stage (params.yaml `train`, with `cpu-demo` and `gpu` profiles)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exact_ct.config import (
    ConfigError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Share,
    from_dict,
    resolve_profile,
)
from exact_ct.model.config import NetworkConfig, PoolingConfig
from exact_ct.model.losses import LossConfig


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation (training only). No flips: left/right organ labels would be wrong.

    Attributes:
        affine_prob: probability of a small random affine per study.
        rotate_deg: maximum rotation about each axis, degrees.
        scale: maximum relative scaling (0.1 = +-10 %).
        translate_vox: maximum translation in voxels.
        intensity_prob: probability of the intensity jitter (scale and shift of the normalised image).
        intensity_scale: maximum relative intensity scaling.
        intensity_shift: maximum additive shift (in normalised units).
        noise_std: standard deviation of additive Gaussian noise (normalised units); 0 disables.
    """

    affine_prob: float = 0.5
    rotate_deg: float = 5.0
    scale: float = 0.05
    translate_vox: float = 2.0
    intensity_prob: float = 0.5
    intensity_scale: float = 0.05
    intensity_shift: float = 0.05
    noise_std: float = 0.0


#: Which weights the model package is written from (``TrainProfile.select``).
SELECTIONS = ("last", "ema", "best_val")


@dataclass(frozen=True)
class TrainProfile:
    """One training profile.

    Attributes:
        network, pooling, loss, augment: see their classes.
        epochs: passes over the training split.
        batch_size: studies per step (per process under DDP).
        lr: peak learning rate (AdamW), cosine decay after ``warmup_steps``.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        grad_clip: maximum gradient norm (0 disables); guards the shared encoder against MIL spikes.
        workers: DataLoader worker processes (0 = in the main process).
        threads: torch CPU threads (``torch.set_num_threads``).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: mixed precision on CUDA: ``bf16``, ``fp16`` or ``none`` (ignored on CPU).
        checkpoint_every_steps: steps between mid-epoch checkpoints (0: none; an epoch end always checkpoints).
        pseudo_mask_start: probability, at epoch 0, of confining the MIL pooling with the pseudo masks
            instead of the predicted organs; decays linearly to 0 over ``pseudo_mask_epochs``.
        pseudo_mask_epochs: length of that decay.
        cache_in_memory: keep the deterministic part of every study in RAM (small datasets).
        deterministic: ``torch.use_deterministic_algorithms`` (CPU runs are then bit-reproducible).
        select: which weights become the model package: ``last`` (the final step's), ``ema`` (an
            exponential moving average of the weights over the steps, decay ``ema_decay``) or
            ``best_val`` (the epoch with the best validation macro AUROC; only meaningful with a large
            validation split: on a few studies that choice is noise).
        ema_decay: decay of the weight average per step (``select: ema``).
    """

    network: NetworkConfig = field(default_factory=NetworkConfig)
    pooling: PoolingConfig = field(default_factory=PoolingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 1
    lr: NonNegativeFloat = 2e-3
    weight_decay: NonNegativeFloat = 1e-4
    warmup_steps: NonNegativeInt = 20
    grad_clip: NonNegativeFloat = 1.0
    workers: NonNegativeInt = 0
    threads: PositiveInt = 2
    device: str = "auto"
    amp: str = "bf16"
    checkpoint_every_steps: NonNegativeInt = 25
    pseudo_mask_start: Share = 1.0
    pseudo_mask_epochs: NonNegativeInt = 4
    cache_in_memory: bool = True
    deterministic: bool = True
    select: str = "last"
    ema_decay: float = 0.99

    def __post_init__(self) -> None:
        if self.select not in SELECTIONS:
            raise ConfigError(f"train select {self.select!r} unknown; expected one of {SELECTIONS}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train ema_decay must be in (0, 1), got {self.ema_decay!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The whole `train` section: the active profile's name, the profiles, the package name, the seed."""

    profile: str = "cpu-demo"
    profiles: dict[str, Any] = field(default_factory=dict)
    model_name: str = "exact-demo"
    version: str = "0.1.0"
    seed: int | None = None

    def active(self) -> TrainProfile:
        if not self.profiles:
            return TrainProfile()
        if self.profile not in self.profiles:
            raise ConfigError(f"train.profile {self.profile!r} not in profiles {sorted(self.profiles)}")
        body = resolve_profile(self.profiles, self.profile, "train.profiles")
        return from_dict(TrainProfile, body, f"train.profiles.{self.profile}")
