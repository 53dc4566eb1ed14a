"""Dataset fingerprint (spacings, shapes, body extents, intensity percentiles) and the plan derived from it."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from exact_ct.dataset.config import GridProfile
from exact_ct.dataset.grid import GridPlan, body_extent_mm
from exact_ct.io import spacing_from_affine
from exact_ct.schema import ORGANS

PERCENTILES = (0.5, 5.0, 25.0, 50.0, 75.0, 95.0, 99.5)


@dataclass
class StudyFingerprint:
    """Per-study statistics; ``samples`` holds sampled HU values per organ id (0 = whole body)."""

    study_id: str
    shape_xyz: tuple[int, int, int]
    spacing_xyz_mm: tuple[float, float, float]
    body_extent_mm: tuple[float, float, float]
    samples: dict[int, np.ndarray]


def _rng_for(study_id: str) -> np.random.Generator:
    # Seeded by the study id, so the fingerprint does not depend on study order or worker count.
    return np.random.default_rng(int.from_bytes(hashlib.sha256(study_id.encode()).digest()[:8], "big"))


def study_fingerprint(
    study_id: str,
    hu: np.ndarray,
    affine: np.ndarray,
    organs: np.ndarray,
    n_samples: int,
    body_threshold_hu: float,
) -> StudyFingerprint:
    """Fingerprint of one study: geometry plus HU samples inside the body (organs > 0) and each organ."""
    rng = _rng_for(study_id)
    samples: dict[int, np.ndarray] = {}
    flat_hu = np.asarray(hu).ravel()
    flat_org = np.asarray(organs).ravel()
    body = np.flatnonzero(flat_org > 0)
    if body.size:
        samples[0] = flat_hu[rng.choice(body, size=min(n_samples, body.size), replace=False)].astype(
            np.float32
        )
    per_organ = max(1, n_samples // (len(ORGANS) - 1))
    for organ_id in range(1, len(ORGANS)):
        idx = np.flatnonzero(flat_org == organ_id)
        if idx.size:
            samples[organ_id] = flat_hu[rng.choice(idx, size=min(per_organ, idx.size), replace=False)].astype(
                np.float32
            )
    return StudyFingerprint(
        study_id=study_id,
        shape_xyz=tuple(int(s) for s in hu.shape[:3]),  # type: ignore[arg-type]
        spacing_xyz_mm=spacing_from_affine(affine),
        body_extent_mm=tuple(float(v) for v in body_extent_mm(hu, affine, body_threshold_hu)),  # type: ignore[arg-type]
        samples=samples,
    )


def _stats(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"n": 0}
    pct = np.percentile(values, PERCENTILES)
    return {
        "n": int(values.size),
        "mean": round(float(values.mean()), 3),
        "std": round(float(values.std()), 3),
        "percentiles": {f"p{p:g}": round(float(v), 3) for p, v in zip(PERCENTILES, pct, strict=True)},
    }


def aggregate(fingerprints: list[StudyFingerprint]) -> dict[str, Any]:
    """The dataset fingerprint (JSON-ready): per-axis spacing/shape/extent summaries, intensity stats."""
    if not fingerprints:
        raise ValueError("no studies to fingerprint: every registered study was quarantined or none exist")
    spacing = np.array([f.spacing_xyz_mm for f in fingerprints])
    shape = np.array([f.shape_xyz for f in fingerprints])
    extent = np.array([f.body_extent_mm for f in fingerprints])

    def axis_summary(a: np.ndarray) -> dict[str, list[float]]:
        return {
            k: [round(float(v), 4) for v in fn(a, axis=0)]
            for k, fn in (("min", np.min), ("median", np.median), ("max", np.max))
        } | {"p95": [round(float(v), 4) for v in np.percentile(a, 95, axis=0)]}

    intensity: dict[str, Any] = {}
    for organ_id, name in ORGANS.items():
        key = "body" if organ_id == 0 else name
        vals = [f.samples[organ_id] for f in fingerprints if organ_id in f.samples]
        intensity[key] = _stats(np.concatenate(vals) if vals else np.zeros(0, np.float32))
    return {
        "n_studies": len(fingerprints),
        "spacing_xyz_mm": axis_summary(spacing),
        "shape_xyz": axis_summary(shape),
        "body_extent_mm": axis_summary(extent),
        "intensity_hu": intensity,
        "_body_samples": np.concatenate(
            [f.samples[0] for f in fingerprints if 0 in f.samples] or [np.zeros(0, np.float32)]
        ),
    }


def plan_grid(fingerprint: dict[str, Any], profile: GridProfile) -> GridPlan:
    """Turn the fingerprint into the model grid (no magic numbers beyond the profile's choices)."""
    if profile.spacing_xyz_mm is not None:
        spacing = tuple(float(v) for v in profile.spacing_xyz_mm)
    else:
        spacing = tuple(float(v) for v in fingerprint["spacing_xyz_mm"]["median"])
    if profile.size_xyz is not None:
        size = tuple(int(v) for v in profile.size_xyz)
    else:
        m = profile.size_multiple
        size = tuple(
            max(m, int(math.ceil(e / s / m)) * m)
            for e, s in zip(fingerprint["body_extent_mm"]["p95"], spacing, strict=True)
        )
    if any(s % profile.size_multiple for s in size):
        raise ValueError(f"grid size {size} must be a multiple of size_multiple={profile.size_multiple}")
    body = fingerprint.get("_body_samples")
    if body is not None and np.size(body):
        lo, hi = (float(v) for v in np.percentile(body, profile.clip_percentiles))
        clipped = np.clip(body, lo, hi)
        mean, std = float(clipped.mean()), float(clipped.std())
    else:
        lo, hi, mean, std = -1000.0, 1000.0, -300.0, 400.0
    return GridPlan(
        spacing_xyz_mm=spacing,  # type: ignore[arg-type]
        size_xyz=size,  # type: ignore[arg-type]
        clip_hu=(round(lo, 3), round(hi, 3)),
        mean_hu=round(mean, 3),
        std_hu=round(std, 3),
        body_threshold_hu=profile.body_threshold_hu,
        antialias=profile.antialias,
        windows_hu=tuple((float(lo), float(hi)) for lo, hi in profile.windows_hu),
    )
