"""Training data: MONAI dictionary transforms (deterministic part apart from random part), dataset, sampler.

Reproducibility without shared RNG state: the random transforms of study ``i`` in epoch ``e`` are seeded
with a hash of (seed, e, i), and the epoch's order with (seed, e). Results are therefore the same with
0 or N DataLoader workers and after a resume in the middle of an epoch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    RandAffined,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from torch.utils.data import Dataset, Sampler

from exact_ct.dataset.cache import load_npz
from exact_ct.dataset.grid import GridPlan, normalise
from exact_ct.dataset.labels import UNCERTAIN_PREFIX
from exact_ct.schema import ABNORMALITIES
from exact_ct.training.config import AugmentConfig

#: Keys of a study item and of a batch (not the organ table nor the label value of exact_ct.schema).
IMAGE_KEY, ORGANS_KEY, LABELS_KEY, UNCERTAIN_KEY, INDEX_KEY = (
    "image",
    "organs",
    "labels",
    "uncertain",
    "index",
)


def derived_seed(*parts: int) -> int:
    """A 31-bit seed from integers, stable across processes and Python versions (no ``hash()``)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class LoadCachedStudyd(MapTransform):
    """Load a cached study (npz path under key ``path``) into ``image`` (float32 HU) and ``organs`` (uint8)."""

    def __init__(self, path_key: str = "path") -> None:
        super().__init__(keys=[path_key])
        self.path_key = path_key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        arrays = load_npz(d.pop(self.path_key), keys=("image", "organs"))
        d[IMAGE_KEY] = arrays["image"].astype(np.float32)
        d[ORGANS_KEY] = arrays["organs"]
        return d


class NormaliseCTd(MapTransform):
    """HU image (x, y, z) -> network input (C, x, y, z) by the plan (exact_ct.dataset.grid.normalise).

    One function serves training, evaluation and ``exact infer``, so the three cannot drift apart.
    """

    def __init__(self, plan: GridPlan, key: str = IMAGE_KEY) -> None:
        super().__init__(keys=[key])
        self.plan = plan
        self.key = key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        d[self.key] = normalise(np.asarray(d[self.key]), self.plan)
        return d


def deterministic_transforms(plan: GridPlan) -> Compose:
    """Load, normalise by the plan (z-scored window or HU windows as channels), add the organ channel."""
    return Compose(
        [
            LoadCachedStudyd(),
            NormaliseCTd(plan),
            EnsureChannelFirstd(keys=[ORGANS_KEY], channel_dim="no_channel"),
            EnsureTyped(keys=[IMAGE_KEY], dtype=torch.float32, track_meta=False),
            EnsureTyped(keys=[ORGANS_KEY], dtype=torch.uint8, track_meta=False),
        ]
    )


def random_transforms(cfg: AugmentConfig) -> Compose:
    """Small affine (organs nearest) and intensity jitter. No flips: they would swap left and right lungs."""
    rot = math.radians(cfg.rotate_deg)
    ts: list[Any] = []
    if cfg.affine_prob > 0:
        ts.append(
            RandAffined(
                keys=[IMAGE_KEY, ORGANS_KEY],
                prob=cfg.affine_prob,
                rotate_range=(rot, rot, rot),
                scale_range=(cfg.scale, cfg.scale, cfg.scale),
                translate_range=(cfg.translate_vox,) * 3,
                mode=("bilinear", "nearest"),
                padding_mode=("border", "zeros"),
            )
        )
    if cfg.intensity_prob > 0:
        ts.append(RandScaleIntensityd(keys=[IMAGE_KEY], factors=cfg.intensity_scale, prob=cfg.intensity_prob))
        ts.append(RandShiftIntensityd(keys=[IMAGE_KEY], offsets=cfg.intensity_shift, prob=cfg.intensity_prob))
    if cfg.noise_std > 0:
        ts.append(RandGaussianNoised(keys=[IMAGE_KEY], std=cfg.noise_std, prob=1.0))
    ts.append(EnsureTyped(keys=[IMAGE_KEY], dtype=torch.float32, track_meta=False))
    ts.append(EnsureTyped(keys=[ORGANS_KEY], dtype=torch.uint8, track_meta=False))
    return Compose(ts)


class StudyDataset(Dataset):
    """Studies of one split; deterministic transforms applied once (cached) or per access.

    Items: ``image`` (C, x, y, z) float32, ``organs`` (1, x, y, z) uint8, ``labels`` and ``uncertain``
    (18,) float32, ``index`` (row in the split).
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        dataset_dir: Path,
        plan: GridPlan,
        augment: AugmentConfig | None = None,
        *,
        seed: int = 0,
        cache_in_memory: bool = True,
    ) -> None:
        self.rows = rows.reset_index(drop=True)
        self.paths = [str(Path(dataset_dir) / c) for c in self.rows["cache"]]
        self.labels = self.rows[list(ABNORMALITIES)].to_numpy(dtype=np.float32)
        self.uncertain = self.rows[[UNCERTAIN_PREFIX + n for n in ABNORMALITIES]].to_numpy(dtype=np.float32)
        self.det = deterministic_transforms(plan)
        self.rand = random_transforms(augment) if augment is not None else None
        self.seed = seed
        self.epoch = 0
        self._cache: list[dict[str, Any]] | None = None
        if cache_in_memory:
            self._cache = [self.det({"path": p}) for p in self.paths]

    def set_epoch(self, epoch: int) -> None:
        """Set before creating the DataLoader iterator: workers are forked with this value."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        base = self._cache[i] if self._cache is not None else self.det({"path": self.paths[i]})
        d = {IMAGE_KEY: base[IMAGE_KEY], ORGANS_KEY: base[ORGANS_KEY]}
        if self.rand is not None:
            self.rand.set_random_state(seed=derived_seed(self.seed, self.epoch, i))
            d = self.rand(d)
        d[LABELS_KEY] = torch.from_numpy(self.labels[i])
        d[UNCERTAIN_KEY] = torch.from_numpy(self.uncertain[i])
        d[INDEX_KEY] = i
        return d


class EpochSampler(Sampler[int]):
    """Seeded per-epoch permutation, sharded by rank (DDP), optionally skipping already-done samples.

    ``skip`` is the number of this rank's samples already consumed in the epoch (resume mid-epoch).
    Every rank receives the same number of samples (the permutation is padded by wrapping around).
    """

    def __init__(
        self,
        n: int,
        seed: int,
        epoch: int,
        *,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        skip: int = 0,
    ) -> None:
        self.n, self.seed, self.epoch, self.shuffle = n, seed, epoch, shuffle
        self.rank, self.world, self.skip = rank, world, skip

    def indices(self) -> list[int]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            if self.shuffle
            else np.arange(self.n)
        )
        per_rank = math.ceil(self.n / self.world)
        padded = np.resize(order, per_rank * self.world)
        return [int(i) for i in padded[self.rank :: self.world]]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip :])

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.world) - self.skip)


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; plain metadata-free batches (no MONAI MetaTensor overhead)."""
    out: dict[str, Any] = {}
    for key in (IMAGE_KEY, ORGANS_KEY, LABELS_KEY, UNCERTAIN_KEY):
        out[key] = torch.stack([torch.as_tensor(it[key]) for it in items])
    out[INDEX_KEY] = torch.tensor([it[INDEX_KEY] for it in items])
    return out
