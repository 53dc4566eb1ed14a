"""Typed configuration of the build_dataset stage (params.yaml `build_dataset`, with grid profiles)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exact_ct.config import ConfigError, from_dict, resolve_profile
from exact_ct.dataset.labels import LabelPolicy
from exact_ct.dataset.split import SplitConfig


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
        labels: binary label policy.
        split: patient-level split fractions and salt.
    """

    profile: str = "cpu-demo"
    profiles: dict[str, Any] = field(default_factory=dict)
    workers: int = 2
    fingerprint_samples: int = 20000
    labels: LabelPolicy = field(default_factory=LabelPolicy)
    split: SplitConfig = field(default_factory=SplitConfig)

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
