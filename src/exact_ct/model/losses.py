"""Losses: prevalence-weighted BCE on pooled probabilities with uncertain-label policy, organ Dice+CE."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: How uncertain (-1, hedged) labels enter the classification loss.
#: ``mask``: ignored; ``soft``: target = soft_target; ``label``: the binary value built by build_dataset.
UNCERTAIN_POLICIES = ("mask", "soft", "label")

_EPS = 1e-6


@dataclass(frozen=True)
class LossConfig:
    """Loss parameters.

    Attributes:
        uncertain: one of :data:`UNCERTAIN_POLICIES`.
        soft_target: target used for uncertain labels when ``uncertain == "soft"``.
        max_pos_weight: cap on the positive-class weight n_neg / n_pos (rare findings).
        organ_weight_start: weight of the organ loss at epoch 0.
        organ_weight_end: weight after ``organ_weight_epochs`` epochs (a floor, so organs stay learnt).
        organ_weight_epochs: length of the decay.
        organ_weight_decay: ``linear`` from start to end over ``organ_weight_epochs``, or ``exp``:
            ``start * exp(-10 * epoch / organ_weight_epochs)`` floored at ``end`` (EXACT's schedule).
        half_scale_weight: weight of the half-resolution MIL loss relative to the full-resolution one.
        average_scales: the MIL loss is the weighted *mean* of the two scales' BCE (EXACT) instead of
            their sum, so adding the half scale does not double the MIL loss against the organ loss.
    """

    uncertain: str = "mask"
    soft_target: float = 0.5
    max_pos_weight: float = 20.0
    organ_weight_start: float = 1.0
    organ_weight_end: float = 0.2
    organ_weight_epochs: int = 10
    half_scale_weight: float = 1.0
    organ_weight_decay: str = "linear"
    average_scales: bool = False

    def __post_init__(self) -> None:
        if self.organ_weight_decay not in ("linear", "exp"):
            raise ValueError(f"loss.organ_weight_decay {self.organ_weight_decay!r}: expected linear or exp")
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise ValueError(
                f"loss.uncertain {self.uncertain!r} unknown; expected one of {UNCERTAIN_POLICIES}"
            )


def pos_weight_from_labels(labels: np.ndarray, valid: np.ndarray, cap: float = 20.0) -> np.ndarray:
    """Positive-class weight per abnormality, n_neg / n_pos over valid training labels, in [1/cap, cap].

    A finding with no positive (or no negative) example gets weight 1 rather than infinity or 0.
    """
    labels = np.asarray(labels, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    pos = ((labels > 0.5) & valid).sum(0).astype(np.float64)
    neg = ((labels <= 0.5) & valid).sum(0).astype(np.float64)
    w = np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1.0), 1.0)
    return np.clip(w, 1.0 / cap, cap)


def apply_uncertain_policy(
    labels: torch.Tensor, uncertain: torch.Tensor, policy: str, soft_target: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and loss weights (mask) for a batch of binary labels with uncertain flags.

    Args:
        labels: (B, 18) binary labels as built by build_dataset.
        uncertain: (B, 18) 1 where the report hedged (-1).
        policy: one of :data:`UNCERTAIN_POLICIES`.
    Returns:
        (targets, mask), both (B, 18) float.
    """
    labels = labels.float()
    unc = uncertain.bool()
    if policy == "mask":
        return labels, (~unc).float()
    if policy == "soft":
        return torch.where(unc, torch.full_like(labels, soft_target), labels), torch.ones_like(labels)
    if policy == "label":
        return labels, torch.ones_like(labels)
    raise ValueError(f"unknown uncertain-label policy {policy!r}; expected one of {UNCERTAIN_POLICIES}")


def weighted_bce(
    probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor
) -> torch.Tensor:
    """Prevalence-weighted binary cross-entropy on probabilities, averaged over unmasked entries.

    Pooled probabilities are products and top-k means of sigmoids, so there are no logits to hand to
    ``BCEWithLogitsLoss``; probabilities are clamped away from 0 and 1 instead.
    """
    p = probs.float().clamp(_EPS, 1.0 - _EPS)
    pw = pos_weight.to(p).reshape(1, -1)
    loss = -(pw * targets * torch.log(p) + (1.0 - targets) * torch.log1p(-p))
    loss = loss * mask
    return loss.sum() / mask.sum().clamp_min(1.0)


def organ_loss_weight(cfg: LossConfig, epoch: int) -> float:
    """Organ-loss weight at ``epoch``: linear or exponential decay (``cfg.organ_weight_decay``)."""
    if cfg.organ_weight_epochs <= 0:
        return cfg.organ_weight_end
    t = min(1.0, max(0.0, epoch / cfg.organ_weight_epochs))
    if cfg.organ_weight_decay == "exp":
        return max(cfg.organ_weight_end, cfg.organ_weight_start * math.exp(-10.0 * t))
    return cfg.organ_weight_start + t * (cfg.organ_weight_end - cfg.organ_weight_start)


def pseudo_mask_probability(start: float, epochs: int, epoch: int) -> float:
    """Probability of confining with the pseudo masks instead of predicted organs (linear decay to 0)."""
    if epochs <= 0:
        return 0.0
    return float(max(0.0, start * (1.0 - epoch / epochs)))


class OrganLoss(nn.Module):
    """Dice + cross-entropy (monai.losses.DiceCELoss) of organ logits against pseudo-mask labels."""

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DeepSupervisionLoss, DiceCELoss

        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=True)
        self.deep = DeepSupervisionLoss(self.loss, weight_mode="exp")

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, deep: tuple[torch.Tensor, ...] = ()
    ) -> torch.Tensor:
        """``logits`` (B, 10, *S); ``labels`` (B, 1, *S) integer organ ids.

        ``deep``: logits of the deep-supervision heads at 1/2, 1/4, ... resolution, scored by
        ``monai.losses.DeepSupervisionLoss`` (labels taken at each scale by nearest neighbour, weights
        1, 1/2, 1/4, ...), divided by the sum of the weights (as nnU-Net normalises them).
        """
        if not deep:
            return self.loss(logits.float(), labels.long())
        levels = [logits, *deep]
        return self.deep(levels, labels.float()) / sum(self.deep.get_weights(len(levels)))
