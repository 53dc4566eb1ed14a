"""Grounded report sentences from crafted maps, and their re-labelling by our own report labeller."""

from __future__ import annotations

import numpy as np
import pytest

from exact_ct.evaluation import grounded as G
from exact_ct.model.pooling import confine
from exact_ct.schema import ABNORMALITIES

SPACING = 2.0


@pytest.fixture(scope="module")
def labeller():
    from exact_ct.reports import ReportLabeller

    return ReportLabeller()


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """30^3 grid: left lung at small x, right lung at large x (RAS+), a nodule-like blob high in the right lung."""
    organs = np.full((30, 30, 30), 9, np.uint8)
    organs[2:13, 5:25, 2:28] = 1
    organs[17:28, 5:25, 2:28] = 2
    maps = np.zeros((30, 30, 30, len(ABNORMALITIES)), np.float32)
    a = ABNORMALITIES.index("Lung nodule")
    maps[20:24, 18:22, 22:26, a] = 0.8
    maps[21, 19, 23, a] = 1.0
    maps[5, 10, 5, a] = 0.3  # a weaker spot elsewhere must not join the finding's region
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = (-30.0, -30.0, -30.0)
    return organs, maps, affine


def test_finding_is_measured_from_the_map() -> None:
    organs, maps, affine = _scene()
    a = ABNORMALITIES.index("Lung nodule")
    f = G.describe("Lung nodule", maps[..., a], organs, affine, 0.9, 0.5)
    assert f.organ == "lung_right" and f.side == "right"
    assert f.lobe == "right upper lobe"  # z = 23 of a lung spanning z 2..27 -> upper 40 %
    assert (f.slice_first, f.slice_last) == (23, 26)  # 1-based axial slices 22..25
    assert f.extent_mm == (8.0, 8.0, 8.0)  # 4 voxels x 2 mm on each axis
    assert f.peak_voxel == (21, 19, 23)
    assert f.peak_ras_mm == (21 * SPACING - 30, 19 * SPACING - 30, 23 * SPACING - 30)
    assert f.voxels == 64
    s = G.sentence(f)
    assert "right upper lobe" in s and "axial slices 23-26" in s and "8 x 8 x 8 mm" in s


def test_lobe_and_side_follow_position() -> None:
    organs, maps, affine = _scene()
    m = np.zeros(organs.shape, np.float32)
    m[5:8, 8:10, 3:5] = 1.0  # base of the left lung
    f = G.describe("Atelectasis", m, organs, affine, 0.8, 0.5)
    assert (f.organ, f.side, f.lobe) == ("lung_left", "left", "left lower lobe")


def test_report_states_positive_absent_and_omits_indeterminate(labeller) -> None:
    organs, maps, affine = _scene()
    probs = {n: 0.01 for n in ABNORMALITIES}
    probs["Lung nodule"] = 0.9
    probs["Pleural effusion"] = 0.4  # below its threshold 0.5 but above 0.5 x 0.5: say nothing
    thresholds = {n: 0.5 for n in ABNORMALITIES}
    conf = confine(maps, organs, (SPACING,) * 3)
    rep = G.build_report(probs, thresholds, conf, organs, affine)
    assert [f.abnormality for f in rep.findings] == ["Lung nodule"]
    stated = rep.stated()
    assert stated["Pleural effusion"] is None and stated["Lung nodule"] == 1 and stated["Emphysema"] == 0
    labels = labeller.label(rep.text).labels
    # the labeller reads back exactly what the report means, for all 18 abnormalities
    assert dict(zip(ABNORMALITIES, labels, strict=True)) == stated


def test_confinement_zeroes_maps_outside_the_organ_region() -> None:
    organs, maps, _ = _scene()
    maps[..., ABNORMALITIES.index("Cardiomegaly")] = 1.0
    conf = confine(maps, organs, (SPACING,) * 3)
    assert conf[..., ABNORMALITIES.index("Cardiomegaly")].max() == 0.0  # no heart in the scene
    assert conf[..., ABNORMALITIES.index("Lung nodule")].max() == 1.0


def test_scores_of_relabelled_reports() -> None:
    ref = np.zeros((3, len(ABNORMALITIES)), np.int8)
    j = ABNORMALITIES.index("Lung nodule")
    ref[0, j] = ref[1, j] = 1
    relabelled = [[None] * len(ABNORMALITIES) for _ in range(3)]
    relabelled[0][j] = 1  # tp
    relabelled[2][j] = 1  # fp; study 1 is a fn
    stated = [{n: None for n in ABNORMALITIES} for _ in range(3)]
    stated[0]["Lung nodule"] = 1
    stated[1]["Lung nodule"] = 0  # read back as None: disagreement
    out = G.score_reports(stated, relabelled, ref)
    assert out["per_abnormality_f1"]["Lung nodule"] == pytest.approx(0.5)
    assert out["per_abnormality_f1"]["Emphysema"] is None  # no positives: undefined
    assert out["macro_f1"] == pytest.approx(0.5)
    assert out["roundtrip_agreement"] == pytest.approx(0.5)
