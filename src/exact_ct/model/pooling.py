"""Organ-confined multiple-instance pooling: each anomaly map x its organ region, then a top-k mean.

Written by hand because no library offers it in 3D (MONAI's ``MILModel`` is 2D, patch-based and has no
organ confinement). The module is small, pure and differentiable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from exact_ct.schema import ABNORMALITIES, NUM_ORGAN_CLASSES, confinement_regions


def region_matrix(
    regions: Mapping[str, Sequence[int]] | None = None,
    confine: bool = True,
    margins_mm: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """(18, 10) 0/1 matrix: row a has a 1 for every organ id of abnormality a's confinement region.

    ``confine=False`` gives every abnormality the whole volume (all 10 classes, background included):
    the ablation without organ confinement.
    """
    m = torch.zeros(len(ABNORMALITIES), NUM_ORGAN_CLASSES)
    if not confine:
        return m + 1.0
    resolved = confinement_regions({k: list(v) for k, v in (regions or {}).items()}, dict(margins_mm or {}))
    for a, name in enumerate(ABNORMALITIES):
        m[a, list(resolved[name][0])] = 1.0
    return m


def region_margins(
    regions: Mapping[str, Sequence[int]] | None = None, margins_mm: Mapping[str, float] | None = None
) -> torch.Tensor:
    """(18,) margin in mm by which each abnormality's confinement region is dilated."""
    resolved = confinement_regions({k: list(v) for k, v in (regions or {}).items()}, dict(margins_mm or {}))
    return torch.tensor([resolved[name][1] for name in ABNORMALITIES], dtype=torch.float32)


def dilate(weights: torch.Tensor, radius_vox: Sequence[int]) -> torch.Tensor:
    """Grey-value dilation of (B, C, X, Y, Z) by a box of half-width ``radius_vox`` per axis.

    Three separable 1-D max-pools: the cost grows linearly with the radius, not with its cube.
    """
    for axis, r in enumerate(radius_vox):
        if r > 0:
            kernel, pad = [1, 1, 1], [0, 0, 0]
            kernel[axis], pad[axis] = 2 * int(r) + 1, int(r)
            weights = F.max_pool3d(weights, tuple(kernel), stride=1, padding=tuple(pad))
    return weights


def confined_regions(
    organ_probs: torch.Tensor,
    matrix: torch.Tensor,
    margins_mm: torch.Tensor,
    spacing_mm: Sequence[float],
) -> torch.Tensor:
    """(B, 18, *S) confinement weights: organ probabilities summed per region, dilated by each margin
    (converted to voxels of ``spacing_mm``) and kept inside the body (1 - P(outside))."""
    w = region_weights(organ_probs, matrix)
    margins = [float(v) for v in margins_mm.tolist()]
    if not any(margins):
        return w
    inside = 1.0 - organ_probs[:, :1].to(w)
    out = w.clone()
    for mm in sorted(set(margins)):
        if mm <= 0:
            continue
        idx = [a for a, v in enumerate(margins) if v == mm]
        radius = [int(mm / float(s) + 0.5) for s in spacing_mm]
        out[:, idx] = dilate(w[:, idx], radius) * inside
    return out


def region_masks(
    organs: np.ndarray,
    spacing_mm: Sequence[float],
    regions: Mapping[str, Sequence[int]] | None = None,
    margins_mm: Mapping[str, float] | None = None,
    confine: bool = True,
) -> np.ndarray:
    """Boolean confinement regions (18, *S) of an organ label map: the numpy view of the pooling's regions."""
    labels = torch.from_numpy(np.asarray(organs).astype(np.int64))
    onehot = F.one_hot(labels, NUM_ORGAN_CLASSES).permute(3, 0, 1, 2)[None].float()
    w = confined_regions(
        onehot, region_matrix(regions, confine, margins_mm), region_margins(regions, margins_mm), spacing_mm
    )
    return (w[0] > 0.5).numpy()


def region_weights(organ_probs: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Soft region per abnormality: the sum of the organ probabilities of its region.

    Args:
        organ_probs: (B, 10, *S) softmax probabilities or one-hot organ masks.
        matrix: (18, 10) region matrix from :func:`region_matrix`.
    Returns:
        (B, 18, *S) weights in [0, 1].
    """
    w = torch.einsum("ac,bc...->ba...", matrix.to(organ_probs), organ_probs)
    return w.clamp(0.0, 1.0)


def topk_mean(values: torch.Tensor, k: int, mass: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the k largest values over all spatial voxels, per (batch, channel).

    Args:
        values: (B, C, *S).
        k: voxels to average (clamped to the number of voxels).
        mass: optional (B, C) effective voxel count of each region; when a region holds fewer than k
            voxels the mean is over ``ceil(mass)`` voxels (at least 1), so a tiny organ is not diluted
            with zeros from outside it, and an empty region gives exactly 0 (no NaN).
    Returns:
        (B, C) pooled values.
    """
    flat = values.flatten(2)
    k = max(1, min(int(k), flat.shape[-1]))
    top = flat.topk(k, dim=-1).values
    if mass is None:
        return top.mean(-1)
    k_eff = mass.detach().ceil().clamp(1, k)
    rank = torch.arange(k, device=values.device, dtype=values.dtype)
    keep = (rank < k_eff.unsqueeze(-1)).to(values.dtype)
    return (top * keep).sum(-1) / keep.sum(-1)


class OrganConfinedMILPool(nn.Module):
    """Pool voxel-level anomaly probabilities into study-level probabilities inside organ regions.

    ``forward(maps, organs, k)``: ``maps`` are sigmoid probabilities (B, 18, *S); ``organs`` are organ
    probabilities or one-hot masks (B, 10, *S') on the same or a finer grid (average-pooled down to the
    map grid when finer, e.g. for the half-resolution maps).

    With ``on_logits`` the maps are logits instead: the region enters as ``logit + log(w)`` (the
    log-space form of ``sigmoid * w``), the top-k mean is taken over logits and the result is its sigmoid.
    """

    def __init__(
        self,
        regions: Mapping[str, Sequence[int]] | None = None,
        confine: bool = True,
        on_logits: bool = False,
        margins_mm: Mapping[str, float] | None = None,
        spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.confine = confine
        self.on_logits = on_logits
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.register_buffer("matrix", region_matrix(regions, confine, margins_mm), persistent=False)
        self.register_buffer("margins", region_margins(regions, margins_mm), persistent=False)
        self.matrix: torch.Tensor
        self.margins: torch.Tensor

    def region(self, organs: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """(B, 18, *size) confinement weights on the map grid (organs average-pooled to it if finer)."""
        spacing = [s * o / m for s, o, m in zip(self.spacing_mm, organs.shape[2:], size, strict=True)]
        if tuple(organs.shape[2:]) != tuple(size):
            d, h, w = (int(n) for n in size)
            organs = F.adaptive_avg_pool3d(organs, (d, h, w))
        return confined_regions(organs, self.matrix, self.margins, spacing)

    def forward(self, maps: torch.Tensor, organs: torch.Tensor, k: int) -> torch.Tensor:
        if not self.confine:
            pooled = topk_mean(maps, k)
            return pooled.sigmoid() if self.on_logits else pooled
        w = self.region(organs, maps.shape[2:])
        mass = w.flatten(2).sum(-1)
        if self.on_logits:
            # log(1e-6) = -13.8: outside the region a voxel cannot win the top-k against one inside it.
            return topk_mean(maps + w.clamp_min(1e-6).log(), k, mass=mass).sigmoid()
        return topk_mean(maps * w, k, mass=mass)

    def pool_input(self, logits: torch.Tensor) -> torch.Tensor:
        """What :meth:`forward` expects from a map head: its logits or their sigmoid."""
        return logits.float() if self.on_logits else logits.float().sigmoid()


def confine(
    maps: np.ndarray,
    organs: np.ndarray,
    spacing_mm: Sequence[float],
    regions: Mapping[str, Sequence[int]] | None = None,
    margins_mm: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Zero each abnormality map (x, y, z, 18) outside its confinement region of the organ label map."""
    masks = region_masks(organs, spacing_mm, regions, margins_mm)
    return np.asarray(maps, dtype=np.float32) * np.moveaxis(masks, 0, -1)
