"""Pseudo organ masks (schema.ORGANS ids 0-9) from a CT volume: intensity or TotalSegmentator backend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from exact_ct.masks.config import BACKENDS, IntensityConfig, PseudoMasksConfig, QCConfig, TotalSegConfig
from exact_ct.masks.totalseg import SegmentFn

__all__ = [
    "BACKENDS",
    "IntensityConfig",
    "PseudoMasksConfig",
    "QCConfig",
    "TotalSegConfig",
    "make_mask",
    "report_path_for",
]


def report_path_for(mask_path: str | os.PathLike[str]) -> Path:
    """TotalSegmentator's per-run JSON report lives beside the mask: ``<study>.totalseg.json``."""
    p = Path(mask_path)
    name = p.name.removesuffix(".gz").removesuffix(".nii")
    return p.with_name(f"{name}.totalseg.json")


def make_mask(
    ct_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str],
    params: PseudoMasksConfig | None = None,
    *,
    segment_fn: SegmentFn | None = None,
) -> np.ndarray:
    """Compute the organ label map of one CT (NIfTI) and save it (uint8, RAS+, same grid) atomically.

    Returns the label map. ``segment_fn`` replaces TotalSegmentator's API function (tests).
    """
    from exact_ct.io import load_canonical, save_label_map, spacing_from_affine
    from exact_ct.schema import organ_labels

    params = params or PseudoMasksConfig()
    hu, affine = load_canonical(ct_path)
    if hu.ndim != 3:
        raise ValueError(f"{ct_path}: expected a 3-D CT volume, got shape {hu.shape}")
    if params.backend == "intensity":
        from exact_ct.masks.intensity import segment

        labels = segment(np.asarray(hu), affine, params.intensity)
    else:
        from exact_ct.masks.totalseg import organs_from_totalseg, run_totalsegmentator

        seg = run_totalsegmentator(ct_path, report_path_for(mask_path), params.totalseg, segment_fn)
        if seg.shape != hu.shape:
            raise RuntimeError(f"{ct_path}: TotalSegmentator output shape {seg.shape} != CT shape {hu.shape}")
        labels = organs_from_totalseg(
            seg, spacing_from_affine(affine), hu=np.asarray(hu), cfg=params.totalseg
        )
    save_label_map(labels, affine, mask_path, organ_labels())
    return labels
