"""Intensity backend on a real CT against TotalSegmentator's reference, mask QC, and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exact_ct.evaluation.localization import dice
from exact_ct.io import load_canonical
from exact_ct.masks import QCConfig
from exact_ct.masks.intensity import segment
from exact_ct.masks.morph import block_mean, downsample_factors, label_sums, upsample_labels
from exact_ct.masks.qc import check, heart_between_lungs, organ_volumes_ml
from exact_ct.masks.steps.spine import SpineLine, front_of_spine
from exact_ct.schema import ORGAN_IDS

TS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ct" / "totalseg"


@pytest.fixture(scope="module")
def real(real_labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, affine = real_labels("example_ct_sm")
    ref, _ = load_canonical(TS / "example_seg.nii.gz")
    return labels, ref, affine


def test_lungs_match_totalsegmentator_on_real_ct(real) -> None:
    labels, ref, _ = real
    # Measured 0.958 (left) and 0.969 (right) on this scan; the floor leaves room for platform noise.
    assert dice(labels == ORGAN_IDS["lung_left"], np.isin(ref, [10, 11])) >= 0.93
    assert dice(labels == ORGAN_IDS["lung_right"], np.isin(ref, [12, 13, 14])) >= 0.93


def test_no_heart_in_the_upper_abdomen_of_a_lung_base_scan(real) -> None:
    labels, ref, affine = real
    # example_ct_sm is a lung-base / upper-abdomen crop where TotalSegmentator finds no heart; an earlier
    # version labelled 165 ml of liver dome as heart here.
    assert (ref == 51).sum() == 0
    assert organ_volumes_ml(labels, affine)["heart"] < 20.0


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray]:
    from exact_ct.synth import render_study

    study = render_study(3, seed=20260427)
    return segment(study.hu, study.affine), study.organs


def test_synthetic_organs_match_the_phantom_truth(synthetic) -> None:
    labels, truth = synthetic
    got = {
        name: dice(labels == ORGAN_IDS[name], truth == ORGAN_IDS[name])
        for name in ORGAN_IDS
        if name != "outside_body"
    }
    # Measured on this study: lungs 0.96/1.00, airway 0.73, pleura 0.91, heart 0.97, aorta 0.78 (0.18
    # before the contrast aorta tracker, tests/unit/test_masks_aorta.py; 0.54 before the descending
    # limb's band followed the spine front's running maximum), esophagus 0.62 (0.54 before it was
    # continued behind the trachea above the mediastinal space), mediastinum
    # 0.88, body 0.98 (before the pleura, floor and spine-front changes: pleura 0.70, esophagus 0.34,
    # mediastinum 0.76, body 0.96; mediastinum 0.88 -> 0.91 once the prevertebral 5 mm were left out of
    # it). Floors a little below.
    floors = {
        "lung_left": 0.93,
        "lung_right": 0.95,
        "airway": 0.65,
        "pleura": 0.85,
        "heart": 0.90,
        "aorta": 0.70,
        "esophagus": 0.55,
        "mediastinum": 0.88,
        "body": 0.96,
    }
    low = {k: round(v, 3) for k, v in got.items() if v < floors[k]}
    assert not low, f"below floor: {low}"


@pytest.mark.parametrize("index", [5, 8])
def test_contrast_heart_whose_blood_is_near_the_bone_threshold(index: int) -> None:
    """Blood pools at a median of ~190 HU: about half their voxels are above the 200 HU bone threshold, a
    speckled network around a small eroded core. It is blood, not bone, so the heart keeps its core."""
    from exact_ct.synth import render_study

    study = render_study(index, seed=20260427)
    labels = segment(study.hu, study.affine)
    got = dice(labels == ORGAN_IDS["heart"], study.organs == ORGAN_IDS["heart"])
    # Measured 0.96 (study 5) and 0.94 (study 8); both were 0.00 when the network was taken for bone.
    assert got >= 0.88, got


def test_small_heart_and_trachea_beside_a_lung_apex() -> None:
    """Synthetic study 1: the lung apex in the top slice is as small as the trachea and nearer the midline
    than 12% of the body width; the heart is thin and a liver dome under the right lung base is thicker."""
    from exact_ct.synth import render_study

    study = render_study(1, seed=20260427)
    labels = segment(study.hu, study.affine)
    got = {n: dice(labels == ORGAN_IDS[n], study.organs == ORGAN_IDS[n]) for n in ("airway", "heart")}
    # Measured airway 0.83 (was 0: the apex was taken as the trachea's seed), heart 0.73 (was 0: the
    # liver dome, with lung directly above it, was taken as the heart).
    assert got["airway"] >= 0.75, got
    assert got["heart"] >= 0.65, got


def test_effusion_lies_inside_the_pleura_label() -> None:
    from exact_ct.synth import render_study

    study = render_study(23, seed=20260427)  # the first benchmark study with a pleural effusion
    effusion = study.lesions["Pleural effusion"] > 0
    labels = segment(study.hu, study.affine)
    share = float((labels[effusion] == ORGAN_IDS["pleura"]).mean())
    # Measured 0.915 (0.796 before the effusion was regrown from thick collections); goal 0.90.
    assert share >= 0.86
    # The chest wall's muscle is not effusion: the pleura label stays close to the truth's size.
    truth_pleura = (study.organs == ORGAN_IDS["pleura"]).sum()
    assert (labels == ORGAN_IDS["pleura"]).sum() < 1.3 * truth_pleura


def _vertebra(with_body: bool, blood_in_front: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 3 mm slab: neural arch (bone, y 2-5), canal (y 6-9, filled), vertebral body (dense, y 10-19)."""
    arch = np.zeros((40, 60, 12), dtype=bool)
    arch[14:26, 2:6, :] = True
    dense = arch.copy()
    dense[14:26, 6:10, :] = True  # the canal, filled as a hole of the dense mask
    if with_body:
        dense[14:26, 10:20, :] = True
        dense[14:26, 10:20, 5] = False  # an intervertebral disc
    if blood_in_front:
        dense[16:24, 10:40, :] = True  # contrast blood running on from the arch: far too long a walk
    return arch, dense


def test_spine_front_walks_through_the_vertebral_body_not_into_blood() -> None:
    spacing = (3.0, 3.0, 3.0)
    line: SpineLine = front_of_spine(*_vertebra(True, False), spacing)
    assert line.has.all()
    assert np.all(line.y_f == 19)  # the front of the body, also at the disc (upper percentile over z)
    arch_only = front_of_spine(*_vertebra(False, True), spacing)
    assert np.all(arch_only.y_f == 5)  # a 114 mm walk is no vertebra: the arch's own front is kept
    behind = line.behind(60)
    assert behind.shape == (1, 60, 12) and behind[0, 18, 0] and not behind[0, 19, 0]


def test_spine_front_ignores_slices_where_only_the_sternum_is_at_the_midline() -> None:
    # Synthetic study 15: ribs join the sternum to the column, so they are one bone component; in some
    # slices the arch lies off the component's median x, and the only voxels near that median were the
    # sternum's: the spine's front jumped ~160 mm forward and the mediastinum of 12 slices was lost.
    spacing = (3.0, 3.0, 3.0)
    arch, dense = _vertebra(True, False)
    arch[14:26, 50:54, :] = True  # sternum, 135 mm in front of the arch
    dense[14:26, 50:54, :] = True
    # slices 3-6: the arch is off to one side and a costal cartilage pulls the component's median onto
    # the sternum
    arch[:, 2:6, 3:7] = False
    arch[2:8, 2:6, 3:7] = True
    arch[20:40, 45, 3:7] = True
    line = front_of_spine(arch, dense, spacing)
    assert line.has.all()
    assert np.all(line.y_f < 25), line.y_f  # the vertebral body's front (19), never the sternum (53)


def test_label_sums_match_scipy() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    labels, n = ndimage.label(rng.random((20, 20, 5)) > 0.6)
    w = rng.normal(size=labels.shape)
    idx = np.arange(1, n + 1)
    assert np.allclose(label_sums(labels, n)[1:], ndimage.sum_labels(np.ones_like(w), labels, idx))
    assert np.allclose(label_sums(labels, n, w)[1:], ndimage.sum_labels(w, labels, idx))


def test_heart_position_rule_flags_a_heart_below_the_lungs() -> None:
    labels = np.full((30, 20, 20), ORGAN_IDS["body"], dtype=np.uint8)
    labels[2:12, 4:16, 8:20] = ORGAN_IDS["lung_left"]
    labels[18:28, 4:16, 8:20] = ORGAN_IDS["lung_right"]
    between = labels.copy()
    between[13:17, 6:12, 10:16] = ORGAN_IDS["heart"]
    assert heart_between_lungs(between) is None
    below = labels.copy()
    below[10:20, 6:12, 1:7] = ORGAN_IDS["heart"]  # under the lung bases: liver dome, not heart
    issue = heart_between_lungs(below)
    assert issue is not None and issue.rule == "heart_position"
    rules = [i.rule for i in check(organ_volumes_ml(below, np.diag([5.0, 5.0, 5.0, 1.0])), labels=below)]
    assert "heart_position" in rules


def test_output_is_a_label_map_on_the_input_grid(real) -> None:
    labels, ref, _ = real
    assert labels.shape == ref.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(10))
    body = labels > 0
    assert body[np.isin(ref, [5, 1, 52])].mean() > 0.99  # liver, spleen, aorta are inside the body


def test_upsampling_restores_the_input_grid() -> None:
    vol = np.arange(7 * 5 * 3, dtype=np.int16).reshape(7, 5, 3)
    f = downsample_factors((0.7, 0.7, 1.0), 1.5)
    assert f == (2, 2, 1)
    coarse = block_mean(vol, f)
    assert coarse.shape == (4, 3, 3)
    assert np.isclose(coarse[0, 0, 1], vol[0:2, 0:2, 1].mean())
    assert np.isclose(coarse[3, 2, 0], vol[6, 4, 0])  # a partial edge block is the mean of what exists
    # every block against a direct mean (edge blocks padded with their edge values), int and float
    rng = np.random.default_rng(1)
    for shape, fac in (((7, 8, 5), (3, 2, 2)), ((9, 10, 4), (2, 3, 3)), ((6, 6, 6), (3, 3, 1))):
        for v in (rng.integers(-1024, 3000, shape).astype(np.int16), rng.normal(size=shape)):
            padded = np.pad(v, [(0, -d % f) for d, f in zip(shape, fac, strict=True)], mode="edge")
            nx, ny, nz = (p // f for p, f in zip(padded.shape, fac, strict=True))
            direct = padded.reshape(nx, fac[0], ny, fac[1], nz, fac[2]).mean(axis=(1, 3, 5))
            assert np.allclose(block_mean(v, fac), direct, atol=1e-4)
    back = upsample_labels(np.arange(coarse.size).reshape(coarse.shape), f, vol.shape)
    assert back.shape == vol.shape and back.flags["C_CONTIGUOUS"]
    assert back[1, 1, 0] == back[0, 0, 0] != back[2, 0, 0]
    assert np.array_equal(back[::2, ::2, :], np.arange(coarse.size).reshape(coarse.shape))


def test_qc_passes_plausible_volumes_and_flags_a_crafted_bad_mask() -> None:
    good = {"lung_left": 2200.0, "lung_right": 2600.0, "body": 20000.0, "heart": 600.0, "aorta": 120.0}
    assert check(good) == []
    labels = np.zeros((40, 40, 40), dtype=np.uint8)
    labels[:] = ORGAN_IDS["body"]
    labels[2:30, 2:30, 2:30] = ORGAN_IDS["lung_right"]  # 7.5 l at 7 mm: one huge lung, no left lung
    affine = np.diag([7.0, 7.0, 7.0, 1.0])
    issues = check(organ_volumes_ml(labels, affine))
    rules = {i.rule for i in issues}
    assert rules == {"missing_organ", "volume_range"}
    assert any("lung_left is missing" in i.message for i in issues)
    assert any("lung_right" in i.message and "maximum" in i.message for i in issues)
    unbalanced = {**good, "lung_left": 400.0}
    assert [i.rule for i in check(unbalanced)] == ["lung_balance"]
    assert [i.rule for i in check(good, QCConfig(max_ml={"heart": 500.0}))] == ["volume_range"]


def test_cli_writes_a_mask_for_a_real_file(tmp_path: Path) -> None:
    out = tmp_path / "mask.nii.gz"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "exact_ct.cli",
            "pseudo-masks",
            str(TS / "example_ct_sm.nii.gz"),
            str(out),
            "--backend",
            "intensity",
            "--params",
            str(tmp_path / "none.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    mask, affine = load_canonical(out)
    _, ct_affine = load_canonical(TS / "example_ct_sm.nii.gz")
    assert mask.dtype == np.uint8 and np.allclose(affine, ct_affine)
    assert (mask == ORGAN_IDS["lung_left"]).sum() > 1000

    imported = tmp_path / "imported.nii.gz"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "exact_ct.cli",
            "import-totalseg",
            str(TS / "example_seg.nii.gz"),
            str(imported),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    seg, _ = load_canonical(TS / "example_seg.nii.gz")
    assert np.array_equal(load_canonical(imported)[0] == ORGAN_IDS["lung_right"], np.isin(seg, [12, 13, 14]))


def test_esophagus_continues_behind_the_trachea_in_the_neck() -> None:
    from exact_ct.masks.config import IntensityConfig
    from exact_ct.masks.steps.esophagus_prior import esophagus_neck

    shape, spacing = (40, 40, 30), (3.0, 3.0, 3.0)
    hu = np.full(shape, -100.0)  # fat
    hu[10:30, 5:25, :] = 40.0  # soft tissue behind the trachea
    airway = np.zeros(shape, dtype=bool)
    airway[18:23, 24:29, 10:] = True  # trachea from slice 10 up (posterior edge y = 24)
    hu[airway] = -1000.0
    esophagus = np.zeros(shape, dtype=bool)
    esophagus[19:22, 18:21, :15] = True  # found in the mediastinal space up to slice 14
    allowed = np.ones(shape, dtype=bool)
    neck = esophagus_neck(hu, esophagus, airway, allowed, spacing, IntensityConfig())
    assert not neck[:, :, :15].any()  # only above the highest slice found
    assert neck[:, :, 15:].any(axis=(0, 1)).all()  # every slice up to the top, where the trachea is
    xs, ys, _ = np.nonzero(neck)
    # centred at the trachea's x, 8 + 4 mm behind its posterior edge (y = 24 -> 20 at 3 mm)
    assert abs(xs.mean() - 20.0) <= 0.5 and abs(ys.mean() - 20.0) <= 0.7
    assert not (neck & airway).any() and (hu[neck] > -30).all()  # never the airway or fat
    # a lumen darkened by partial volume inside the tube is the esophagus's (a hole of the disc's tissue)
    hu_lumen = hu.copy()
    hu_lumen[20, 20, 15:] = -60.0
    with_lumen = esophagus_neck(hu_lumen, esophagus, airway, allowed, spacing, IntensityConfig())
    assert with_lumen[20, 20, 15:].all() and np.array_equal(with_lumen, neck)
    # no airway above: nothing to follow
    assert not esophagus_neck(hu, esophagus, np.zeros_like(airway), allowed, spacing, IntensityConfig()).any()


def test_main_bronchus_is_followed_where_it_touches_the_lung() -> None:
    """A bronchus whose air section merges with the lung (thin wall, coarse grid) goes on by its dark lumen."""
    from exact_ct.masks.config import IntensityConfig
    from exact_ct.masks.steps.airway import track_airway

    shape = (60, 40, 40)
    hu = np.full(shape, 40.0)
    body = np.ones(shape, dtype=bool)
    hu[:2] = hu[-2:] = -1000.0  # outside air at the sides keeps the body's midline at x 30
    body[:2] = body[-2:] = False
    x, y = np.mgrid[: shape[0], : shape[1]]
    lung = (x >= 36) & (x < 56) & (y >= 10) & (y < 30)
    for z in range(shape[2]):
        # trachea (radius 3 voxels) from the top down to z 20, then a bronchus drifting right into the lung
        cx = 30 if z >= 20 else 30 + (20 - z) // 2
        hu[:, :, z][(x - cx) ** 2 + (y - 20) ** 2 <= 9] = -1000.0
        if z < 25:
            hu[:, :, z][lung & ((x - cx) ** 2 + (y - 20) ** 2 > 9)] = -850.0  # aerated lung
    air = body & (hu < -400)
    airway, _ = track_airway(air, hu, body, (3.0, 3.0, 3.0), IntensityConfig())
    lumen = body & (hu < -930)
    # Below z 20 the bronchus lies against the lung; its lumen is followed (before: only down to z 17), the
    # lung beyond the ring around the lumen is not taken.
    assert airway[:, :, :17].any(axis=(0, 1)).all()
    assert airway[:, :, 10][lumen[:, :, 10]].all()
    assert not airway[:, :, 10][(hu[:, :, 10] == -850.0) & ~ndimage_ring(lumen[:, :, 10])].any()


def ndimage_ring(mask: np.ndarray) -> np.ndarray:
    """The mask and its in-plane 4-neighbours."""
    from scipy import ndimage

    return ndimage.binary_dilation(mask, structure=ndimage.generate_binary_structure(2, 1))


def test_soft_tissue_continuous_with_the_tissue_under_the_floor_is_not_mediastinum() -> None:
    from exact_ct.masks.steps.mediastinum import under_floor_tissue

    region = np.zeros((20, 20, 20), dtype=bool)
    region[5:15, 5:15, 8:] = True  # the space between the lungs, floor at z 8
    soft = np.zeros_like(region)
    soft[6:10, 6:10, 0:11] = True  # a dome rising from below the floor up to z 10
    soft[11:14, 11:14, 14:17] = True  # a lymph node or vessel inside the space, surrounded by fat
    dome = under_floor_tissue(region, soft)
    assert dome[6:10, 6:10, 8:11].all()  # the dome's part above the floor
    assert not dome[11:14, 11:14, 14:17].any()
    assert not (dome & ~region).any()
