"""Mask-test helpers: the real TotalSegmentator cases, each segmented once per session, and their references."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

TS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ct" / "totalseg"

#: case name -> CT path below ``TS`` (the intensity backend segments each once per test session)
REAL_CTS = {
    "example_ct_sm": "example_ct_sm.nii.gz",
    "aorta_report": "aorta_report/ct_cropped.nii.gz",
    "pulmonary_report": "pulmonary_report/ct_cropped.nii.gz",
}


@pytest.fixture(scope="session")
def totalseg() -> Path:
    """The real TotalSegmentator cases in ../shared/data/ct/totalseg."""
    return TS


@pytest.fixture(scope="session")
def real_reference() -> Callable[[str, str], np.ndarray]:
    """``real_reference(mask, case)`` -> a reference mask (path below ``TS``) resampled (nearest) onto the
    canonical grid of the case's CT, as a bool array."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    def get(mask: str, case: str) -> np.ndarray:
        ct = nib.as_closest_canonical(nib.load(str(TS / REAL_CTS[case])))
        return np.asanyarray(resample_from_to(nib.load(str(TS / mask)), ct, order=0).dataobj) > 0

    return get


@pytest.fixture(scope="session")
def real_labels() -> Callable[[str], tuple[np.ndarray, np.ndarray]]:
    """``real_labels(case)`` -> (intensity-backend labels, affine) of a real CT, computed once per session."""
    from exact_ct.io import load_canonical
    from exact_ct.masks.intensity import segment

    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(case: str) -> tuple[np.ndarray, np.ndarray]:
        if case not in cache:
            hu, affine = load_canonical(TS / REAL_CTS[case])
            cache[case] = (segment(np.asarray(hu), affine), affine)
        return cache[case]

    return get
