"""Synthetic hospital: chest CT phantoms with abnormalities, DICOM series, reports and ground truth."""

from __future__ import annotations

from exact_ct.synth.drop import DropConfig, write_drop
from exact_ct.synth.study import SyntheticStudy, render_study

__all__ = ["DropConfig", "SyntheticStudy", "render_study", "write_drop"]
