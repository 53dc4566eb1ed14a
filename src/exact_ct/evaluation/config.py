"""Typed configuration of the evaluate stage (params.yaml `evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

THRESHOLD_METHODS = ("youden", "f1")
LABEL_SOURCES = ("auto", "report", "truth")


@dataclass(frozen=True)
class GroundingConfig:
    """How maps become report sentences (exact_ct.evaluation.grounded).

    Attributes:
        absent_ratio: a finding is "confidently absent" (negative sentence) when its probability is
            below ``absent_ratio`` x its threshold; between that and the threshold nothing is said.
        extent_fraction: the finding's region is the connected part of the organ-confined map at or above
            this fraction of the peak that contains the peak.
        min_map_value: voxels below this map value never belong to a finding's region.
    """

    absent_ratio: float = 0.5
    extent_fraction: float = 0.5
    min_map_value: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.absent_ratio <= 1.0:
            raise ValueError("evaluate.grounding.absent_ratio must be in [0, 1]")
        if not 0.0 < self.extent_fraction <= 1.0:
            raise ValueError("evaluate.grounding.extent_fraction must be in (0, 1]")


@dataclass(frozen=True)
class EvaluateConfig:
    """The whole `evaluate` section.

    Attributes:
        label_source: reference labels: ``report`` (report-derived binary labels, what a hospital has),
            ``truth`` (synthetic ground truth), ``auto`` (truth when every val/test study has it).
        threshold_method: ``youden`` (max sensitivity + specificity - 1) or ``f1`` (max F1), chosen on
            the validation split only.
        bootstrap: bootstrap replicates for the 95 % intervals (0 disables intervals).
        ci: interval coverage.
        seed: bootstrap seed; ``None`` takes the top-level ``seed``.
        ece_bins: equal-width bins of the expected calibration error.
        topk_percent: share (%) of the abnormality's organ region kept as the "top-k %" map for Dice.
        hit_dice: a finding is hit when its top-k % Dice reaches this (EXACT's HIT uses 0.1).
        pointing_tolerance_mm: the peak counts as inside the lesion within this distance (one voxel of
            a 4 mm grid by default, so 1-2 voxel lesions are not lost to resampling).
        explain_max: test studies that get explanation files (NIfTI maps, montage); 0 = all.
        gallery_max: studies shown in the HTML gallery.
        montage_findings: positive findings shown per montage (highest probability first).
        device: ``cpu`` or ``cuda``/``auto``.
        threads: torch CPU threads.
        grounding: see :class:`GroundingConfig`.
    """

    label_source: str = "auto"
    threshold_method: str = "youden"
    bootstrap: int = 1000
    ci: float = 0.95
    seed: int | None = None
    ece_bins: int = 10
    topk_percent: float = 5.0
    hit_dice: float = 0.1
    pointing_tolerance_mm: float = 4.0
    explain_max: int = 0
    gallery_max: int = 6
    montage_findings: int = 3
    device: str = "auto"
    threads: int = 2
    grounding: GroundingConfig = field(default_factory=GroundingConfig)

    def __post_init__(self) -> None:
        if self.threshold_method not in THRESHOLD_METHODS:
            raise ValueError(
                f"evaluate.threshold_method {self.threshold_method!r}: expected one of {THRESHOLD_METHODS}"
            )
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"evaluate.label_source {self.label_source!r}: expected one of {LABEL_SOURCES}")
        if not 0.0 < self.ci < 1.0:
            raise ValueError("evaluate.ci must be in (0, 1)")
        if not 0.0 < self.topk_percent <= 100.0:
            raise ValueError("evaluate.topk_percent must be in (0, 100]")
