"""TotalSegmentator class mapping, derived pleura/mediastinum on its real outputs, and the call wiring."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from exact_ct.io import load_canonical, spacing_from_affine
from exact_ct.masks import PseudoMasksConfig, TotalSegConfig, make_mask, report_path_for
from exact_ct.masks.totalseg import (
    ORGAN_CLASSES,
    ROI_SUBSET,
    TOTAL_V2_IDS,
    WeightsMissingError,
    check_weights,
    organs_from_totalseg,
)
from exact_ct.schema import ORGAN_IDS

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TS = DATA / "ct" / "totalseg"


def test_ids_match_totalsegmentators_own_v2_class_map() -> None:
    names = json.loads((DATA / "maps" / "totalsegmentator_total_v2.json").read_text())
    for name, i in TOTAL_V2_IDS.items():
        assert names[str(i)] == name
    from totalsegmentator.map_to_binary import class_map

    assert all(class_map["total"][i] == n for n, i in TOTAL_V2_IDS.items())
    assert set(ROI_SUBSET) >= {n for names in ORGAN_CLASSES.values() for n in names}


@pytest.mark.parametrize("name", ["example_seg", "example_seg_fast"])
def test_lobes_map_to_the_correct_lung_side(name: str) -> None:
    seg, affine = load_canonical(TS / f"{name}.nii.gz")
    labels = organs_from_totalseg(seg, spacing_from_affine(affine))
    left = np.isin(seg, [10, 11])
    right = np.isin(seg, [12, 13, 14])
    assert np.array_equal(labels == ORGAN_IDS["lung_left"], left)
    assert np.array_equal(labels == ORGAN_IDS["lung_right"], right)
    assert np.array_equal(labels == ORGAN_IDS["aorta"], seg == 52)
    # RAS+ canonical grid: +x is the patient's right, so the left lung lies at smaller x indices.
    assert np.nonzero(left)[0].mean() < np.nonzero(right)[0].mean()
    assert np.nonzero(right)[0].mean() * spacing_from_affine(affine)[0] + affine[0, 3] > 0


def test_derived_pleura_is_a_shell_outside_the_lungs_and_takes_fluid() -> None:
    seg, affine = load_canonical(TS / "example_seg.nii.gz")
    hu, _ = load_canonical(TS / "example_ct_sm.nii.gz")
    spacing = spacing_from_affine(affine)
    labels = organs_from_totalseg(seg, spacing, hu=hu)
    pleura = labels == ORGAN_IDS["pleura"]
    lungs = np.isin(seg, [10, 11, 12, 13, 14])
    assert pleura.any() and not (pleura & lungs).any()
    assert not (pleura & (seg > 0)).any()  # never over another TotalSegmentator structure
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(~lungs, sampling=spacing)
    shell_only = organs_from_totalseg(seg, spacing) == ORGAN_IDS["pleura"]
    assert dist[shell_only].max() <= TotalSegConfig().pleura_shell_mm + 1e-6
    # Simulated effusion: unlabelled voxels in the cage just outside the lung become fluid density.
    fluid = ~lungs & (seg == 0) & (dist > 4) & (dist <= 15) & (np.arange(hu.shape[2]) >= 22)[None, None, :]
    from exact_ct.masks.derive import thoracic_cage

    fluid &= thoracic_cage(lungs, (seg >= 92) & (seg <= 117))  # between lung and chest wall
    wet = hu.copy()
    wet[fluid] = 15
    wet_labels = organs_from_totalseg(seg, spacing, hu=wet)
    assert fluid.sum() > 20
    assert (wet_labels[fluid] == ORGAN_IDS["pleura"]).mean() >= 0.9


def test_mediastinum_lies_between_the_lungs_and_excludes_other_structures() -> None:
    seg, affine = load_canonical(TS / "example_seg.nii.gz")
    labels = organs_from_totalseg(seg, spacing_from_affine(affine))
    med = labels == ORGAN_IDS["mediastinum"]
    assert med.any()
    assert not (med & (seg > 0) & ~np.isin(seg, [53, 54, 55, 56, 57, 58, 59, 60, 62])).any()
    xs = np.nonzero(med)[0]
    left_max = np.nonzero(np.isin(seg, [10, 11]))[0].min()
    right_min = np.nonzero(np.isin(seg, [12, 13, 14]))[0].max()
    assert left_max <= xs.min() and xs.max() <= right_min


def test_dicom_output_without_lungs_keeps_aorta_and_body() -> None:
    seg, affine = load_canonical(TS / "example_seg_dicom.nii.gz")
    labels = organs_from_totalseg(seg, spacing_from_affine(affine))
    assert np.array_equal(labels == ORGAN_IDS["aorta"], seg == 52)
    assert not np.isin(labels, [1, 2, 4]).any()
    assert ((labels == ORGAN_IDS["body"]) | (labels == 6))[seg > 0].all()


def test_missing_weights_fail_fast_and_name_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "home"))
    calls: list[dict] = []
    params = PseudoMasksConfig(backend="totalsegmentator")
    t0 = time.perf_counter()
    with pytest.raises(WeightsMissingError) as err:
        make_mask(
            TS / "example_ct_sm.nii.gz",
            tmp_path / "m.nii.gz",
            params,
            segment_fn=lambda **kw: calls.append(kw),
        )
    assert time.perf_counter() - t0 < 5.0
    assert str((tmp_path / "home" / "nnunet" / "results").resolve()) in str(err.value)
    assert "totalseg_download_weights" in str(err.value)
    assert calls == []  # never called, so never downloads
    config = json.loads((tmp_path / "home" / "config.json").read_text())
    assert config["send_usage_stats"] is False


def test_call_wiring_with_an_injected_segment_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The injected function returns TotalSegmentator's real published output for this CT."""
    import nibabel as nib

    weights = tmp_path / "weights"
    (weights / "Dataset297_TotalSegmentator_total_3mm_1559subj").mkdir(parents=True)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "home"))
    calls: list[dict] = []

    def fake_api(**kwargs):
        calls.append(kwargs)
        Path(kwargs["report"]).write_text('{"task": "total"}')
        return nib.load(str(TS / "example_seg_fast.nii.gz"))

    cfg = TotalSegConfig(weights_dir=str(weights), fast=True, device="cpu")
    params = PseudoMasksConfig(backend="totalsegmentator", totalseg=cfg)
    out = tmp_path / "mask.nii.gz"
    labels = make_mask(TS / "example_ct_sm.nii.gz", out, params, segment_fn=fake_api)
    (call,) = calls
    assert call["task"] == "total" and call["fast"] is True and call["device"] == "cpu"
    assert "lung_upper_lobe_left" in call["roi_subset"] and "trachea" in call["roi_subset"]
    assert Path(call["report"]) == report_path_for(out) and report_path_for(out).exists()
    saved, _ = load_canonical(out)
    assert np.array_equal(saved, labels)
    seg, _ = load_canonical(TS / "example_seg_fast.nii.gz")
    assert np.array_equal(labels == 1, np.isin(seg, [10, 11]))


def test_check_weights_accepts_installed_datasets(tmp_path: Path) -> None:
    for d in (291, 292, 293, 294, 295, 297):
        (tmp_path / f"Dataset{d}_x").mkdir()
    assert check_weights(TotalSegConfig(weights_dir=str(tmp_path))) == tmp_path
    (tmp_path / "Dataset293_x").rmdir()
    with pytest.raises(WeightsMissingError, match="Dataset293"):
        check_weights(TotalSegConfig(weights_dir=str(tmp_path)))
