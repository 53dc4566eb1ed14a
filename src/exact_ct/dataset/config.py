"""Typed configuration of the build_dataset stage (params.yaml `build_dataset`, with grid profiles)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from exact_ct.config import ConfigError, from_dict, resolve_profile
from exact_ct.dataset.labels import check_trainable
from exact_ct.dataset.split import SplitConfig
from exact_ct.reports.policy import BinaryPolicy


@dataclass(frozen=True)
class GridProfile:
    """Model-grid choices of one profile.

    Attributes:
        spacing_xyz_mm: target spacing; ``None`` takes the fingerprint's median spacing per axis.
        size_xyz: grid size in voxels; ``None`` covers the fingerprint's 95th percentile body extent,
            rounded up to a multiple of ``size_multiple``.
        size_multiple: the network's divisor (2 ** (levels - 1)); planned sizes are multiples of it.
        clip_percentiles: body HU percentiles used as the intensity window (nnU-Net's CT scheme).
        body_threshold_hu: HU threshold that defines the body when locating its bounding box.
        antialias: Gaussian pre-filter before downsampling the image.
        windows_hu: HU windows fed as input channels (see exact_ct.dataset.grid.GridPlan); empty: one
            z-scored channel.
    """

    spacing_xyz_mm: tuple[float, float, float] | None = (4.0, 4.0, 4.0)
    size_xyz: tuple[int, int, int] | None = (64, 64, 80)
    size_multiple: int = 8
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    body_threshold_hu: float = -500.0
    antialias: bool = True
    windows_hu: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class BuildDatasetConfig:
    """The whole `build_dataset` section.

    Attributes:
        profile: name of the active entry of ``profiles`` (``cpu-demo`` or ``gpu``).
        profiles: grid profiles by name (see :class:`GridProfile`).
        workers: processes for per-study work (exact_ct.parallel.map_ordered).
        fingerprint_samples: body voxels sampled per study for the intensity fingerprint.
        binary_policy: how report labels become 0/1 training targets (0 or 1 each; no masking).
        split: patient-level split fractions and salt.
        labels: the former name of ``binary_policy``, read for one more release with a ``FutureWarning``.
    """

    profile: str = "cpu-demo"
    profiles: dict[str, Any] = field(default_factory=dict)
    workers: int = 2
    fingerprint_samples: int = 20000
    binary_policy: BinaryPolicy = field(default_factory=BinaryPolicy)
    split: SplitConfig = field(default_factory=SplitConfig)
    labels: BinaryPolicy | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            if self.binary_policy != BinaryPolicy():
                raise ConfigError(
                    "build_dataset: both `labels` and `binary_policy` are set; `labels` is the old name of "
                    "`binary_policy`: keep `binary_policy` only"
                )
            warnings.warn(
                "params.yaml build_dataset.labels is deprecated and will be rejected in the next release: "
                "rename it build_dataset.binary_policy (same keys: not_mentioned, uncertain)",
                FutureWarning,
                stacklevel=2,
            )
            object.__setattr__(self, "binary_policy", self.labels)
            object.__setattr__(self, "labels", None)
        try:
            check_trainable(self.binary_policy)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def grid(self) -> GridProfile:
        """The active profile as a typed :class:`GridProfile` (unknown keys rejected)."""
        if not self.profiles:
            return GridProfile()
        if self.profile not in self.profiles:
            raise ConfigError(
                f"build_dataset.profile {self.profile!r} not in profiles {sorted(self.profiles)}"
            )
        body = resolve_profile(self.profiles, self.profile, "build_dataset.profiles")
        return from_dict(GridProfile, body, f"build_dataset.profiles.{self.profile}")
