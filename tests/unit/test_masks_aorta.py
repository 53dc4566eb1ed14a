"""Aorta of the intensity backend: real contrast and unenhanced CTs against TotalSegmentator, and phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from exact_ct.evaluation.localization import dice
from exact_ct.io import load_canonical
from exact_ct.masks.config import IntensityConfig
from exact_ct.masks.intensity import segment
from exact_ct.masks.morph import inplane_distance
from exact_ct.masks.steps.aorta_contrast import aorta_enhanced
from exact_ct.masks.steps.aorta_tracks import ASCENDING_RATIO
from exact_ct.masks.steps.spine import SpineLine, find_column
from exact_ct.masks.tubes import track_tube
from exact_ct.schema import ORGAN_IDS

AORTA = ORGAN_IDS["aorta"]


def test_contrast_aorta_on_real_ct(real_labels, real_reference) -> None:
    """aorta_report: a contrast chest CT crop whose descending aorta holds a mural thrombus."""
    labels, _ = real_labels("aorta_report")
    ref = real_reference("aorta_report/aorta.nii.gz", "aorta_report")
    # Measured 0.814 (0.000 before the contrast tracker: the lumen was cut by the spine search box and
    # a lateral rib was taken for the spine). Floor a little below.
    assert dice(labels == AORTA, ref) >= 0.76
    # The ascending aorta is found and given back by the heart (the heart's regrowth had taken it).
    zs = np.flatnonzero(ref.any(axis=(0, 1)))
    mid = zs[len(zs) * 2 // 3]
    assert (labels[:, :, mid] == AORTA).sum() >= 0.6 * ref[:, :, mid].sum()


def test_unenhanced_abdominal_aorta_on_real_ct(real_labels, totalseg) -> None:
    """example_ct_sm: lung bases and upper abdomen without contrast; the aorta runs in front of the spine."""
    labels, _ = real_labels("example_ct_sm")
    ref, _ = load_canonical(totalseg / "example_seg.nii.gz")
    # Measured 0.849 (0.000 before: only the mediastinum was searched). Floor a little below.
    assert dice(labels == AORTA, np.asarray(ref) == 52) >= 0.78


def _lungs_and_bone(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lung_l = np.zeros(shape, dtype=bool)
    lung_r = np.zeros(shape, dtype=bool)
    lung_l[2:15, 5:25] = True
    lung_r[25:38, 5:25] = True
    return lung_l, lung_r, np.zeros(shape, dtype=bool)


def test_spine_is_the_long_bone_between_the_lungs() -> None:
    # A crop: the cut ends of ribs at the lateral edge form a long column more posterior than the spine.
    lung_l, lung_r, bone = _lungs_and_bone((40, 30, 20))
    bone[18:22, 2:6] = True  # vertebral column between the lungs
    bone[0:2, 0:3] = True  # lateral, more posterior, just as long
    spine = find_column(bone, lung_l, lung_r)
    assert spine[19, 3, 10] and not spine[0, 0, 10]


def test_spine_is_not_a_thin_posterior_line() -> None:
    # Synthetic study 24: spinous process tips cut off by the field of view form a thin, long, midline
    # line behind the column; taken as the spine, it sent the aorta's search onto the vertebral body.
    lung_l, lung_r, bone = _lungs_and_bone((40, 30, 20))
    bone[17:23, 4:10] = True  # vertebral column
    bone[19:21, 1] = True  # thin line, 2 voxels per slice, further back, just as long
    spine = find_column(bone, lung_l, lung_r)
    assert spine[19, 6, 10] and not spine[19, 1, 10]


@pytest.mark.parametrize(
    ("study_id", "floor"),
    [
        # measured 0.80; 0.00 before: a thin posterior line was taken for the spine and the whole
        # descending track ran on the vertebral body
        (24, 0.7),
        # measured 0.44; 0.31 before: the heart's regrowth took the lower descending aorta, and its
        # discs were cut to the vessel's soft tissue, which excludes the heart
        (29, 0.4),
        # measured 0.80; 0.72 before: the soft-tissue section, re-centred on the soft tissue round the
        # lumen, slid onto the touching esophagus in the lower slices
        (5, 0.76),
        # unenhanced; measured 0.75; 0.08 before: the spine's front jumped onto the sternum in 8 slices
        # (0.26 with that fixed), and the descending aorta's 10.7 mm section read 7.5 mm on the 3.4 mm
        # grid, under the 8 mm the track needed
        (15, 0.65),
        # unenhanced; measured 0.74; 0.65 before: the heart's regrowth took the touching lower descending
        # aorta and the tube's downward extension stopped at sections more than 30 % heart
        (28, 0.70),
    ],
)
def test_aorta_in_synthetic_studies(study_id: int, floor: float) -> None:
    from exact_ct.synth import render_study

    study = render_study(study_id, seed=20260427)
    labels = segment(study.hu, study.affine)
    assert dice(labels == AORTA, study.organs == AORTA) >= floor


def test_tube_track_stops_where_the_tube_opens_into_a_chamber() -> None:
    spacing = (3.0, 3.0, 3.0)
    x, y, z = np.meshgrid(*(np.arange(n) * 3.0 for n in (40, 40, 30)), indexing="ij")
    tube = (x - 60.0) ** 2 + (y - 60.0) ** 2 <= 12.0**2
    tube &= z >= 30.0
    chamber = (x - 60.0) ** 2 + (y - 60.0) ** 2 + (z - 15.0) ** 2 <= 35.0**2
    d2 = inplane_distance(tube | chamber, spacing)
    from scipy import ndimage

    peaks = (d2 >= 4.5) & (d2 == ndimage.maximum_filter(d2, size=(3, 3, 1)))
    seed = (25, 20, 20)
    chain = track_tube(
        peaks,
        d2,
        seed,
        spacing,
        8.0,
        directions=(-1,),
        ratio=ASCENDING_RATIO,
        max_radius=1.6 * d2[20, 20, 25],
    )
    radii = [chain[k][2] for k in sorted(chain)]
    assert min(chain) >= 8, f"ran into the chamber: {sorted(chain)}"
    assert max(radii) <= 1.6 * d2[20, 20, 25]
    # Without the radius cap the same track grows into the chamber slice by slice.
    loose = track_tube(peaks, d2, seed, spacing, 8.0, directions=(-1,))
    assert min(loose) < min(chain)


def test_enhanced_aorta_takes_the_thrombus_around_an_eccentric_lumen() -> None:
    spacing = (3.0, 3.0, 3.0)
    shape = (50, 50, 30)
    x, y, _ = np.meshgrid(*(np.arange(n) * 3.0 for n in shape), indexing="ij")
    hu = np.full(shape, -100.0, dtype=np.float32)  # mediastinal fat
    vessel = (x - 75.0) ** 2 + (y - 66.0) ** 2 <= 16.0**2
    lumen = (x - 72.0) ** 2 + (y - 69.0) ** 2 <= 9.5**2  # eccentric, inside the vessel
    hu[vessel] = 50.0  # mural thrombus
    hu[lumen] = 400.0
    # spine midline 100 mm, front 60 mm: the expected centre lies 25 mm left of / 5 mm in front of it
    spine = SpineLine(
        np.ones(shape[2], dtype=bool), np.full(shape[2], 100.0 / 3), np.full(shape[2], 60.0 / 3)
    )
    allowed = np.ones(shape, dtype=bool)
    none = np.zeros(shape, dtype=bool)
    out = aorta_enhanced(hu, allowed, none, none, 400.0, spine, spacing, IntensityConfig())
    assert dice(out, vessel) >= 0.8
    assert out.sum() > 1.5 * lumen.sum()  # more than the enhanced lumen alone
    assert not (out & (hu < -30)).any()  # never the fat around it


def test_no_lumen_below_the_threshold_halfway_to_the_blood_pool() -> None:
    # Soft tissue at 40 HU with a blood pool of 240 HU: the lumen threshold (140 HU) leaves no lumen.
    spacing = (3.0, 3.0, 3.0)
    shape = (30, 30, 20)
    hu = np.full(shape, 40.0, dtype=np.float32)
    spine = SpineLine(np.ones(shape[2], dtype=bool), np.full(shape[2], 15.0), np.full(shape[2], 10.0))
    none = np.zeros(shape, dtype=bool)
    out = aorta_enhanced(hu, np.ones(shape, dtype=bool), none, none, 240.0, spine, spacing, IntensityConfig())
    assert not out.any()


def test_unenhanced_ascending_aorta_in_a_phantom() -> None:
    """Synthetic study 2 (no contrast): the ascending aorta is the round soft-tissue tube in front."""
    from exact_ct.synth import render_study

    study = render_study(2, seed=20260427)
    labels = segment(study.hu, study.affine)
    truth = study.organs == AORTA
    # Measured 0.72 (0.52 before: the arch's top section, narrower than the tube below, was taken as
    # the ascending limb's seed and its radius-ratio track stopped at once). Floor a little below.
    assert dice(labels == AORTA, truth) >= 0.65
    # the ascending limb: of the truth's front half (y above its median) 0.50 is found (0.02 before)
    ys = np.nonzero(truth)[1]
    front = truth & (np.arange(truth.shape[1])[None, :, None] > np.median(ys))
    assert (labels[front] == AORTA).mean() >= 0.4


def test_root_extension_continues_the_tube_along_its_axis() -> None:
    """The root is the ascending tube's straight continuation below its lowest slice, at its radius."""
    from exact_ct.masks.steps.aorta_tracks import root_extension

    spacing = (2.0, 2.0, 4.0)
    # tracked from z 10 to 20; the centre moves +1 voxel in x (2 mm) per slice (4 mm) going up
    chain = {z: (20 + (z - 10), 30, 12.0 if z != 12 else 30.0) for z in range(10, 21)}
    ext = root_extension(chain, 20.0, spacing)
    assert sorted(ext) == [5, 6, 7, 8, 9]  # 20 mm at 4 mm per slice, below z 10
    for z, (x, y, r) in ext.items():
        assert (x, y) == (20 + (z - 10), 30)  # on the fitted line
        assert r == 12.0  # the median radius: an outlier slice does not set it
    assert root_extension(chain, 0.0, spacing) == {}
    assert root_extension({}, 20.0, spacing) == {}
    # a steep in-plane drift (a bad fit) is clamped to 1 mm per mm
    steep = {z: (40 + 5 * (z - 10), 30, 10.0) for z in range(10, 14)}
    x_low = root_extension(steep, 8.0, spacing)[8][0]
    assert x_low == round((40 * 2.0 - 1.0 * 8.0) / 2.0)


def test_unenhanced_aortic_root_inside_the_heart_outline() -> None:
    """Synthetic study 2 (no contrast): the root below the ascending track is labelled aorta, not heart."""
    from exact_ct.synth import render_study

    study = render_study(2, seed=20260427)
    truth = study.organs == AORTA
    without = segment(study.hu, study.affine, IntensityConfig(aortic_root_mm=0.0)) == AORTA
    labels = segment(study.hu, study.affine, IntensityConfig(aortic_root_mm=20.0)) == AORTA
    added = labels & ~without
    assert added.sum() > 150  # measured 249 voxels
    # measured: 0.90 of the added voxels are truth aorta (the rest truth heart); Dice 0.741 -> 0.777
    assert truth[added].mean() >= 0.8
    assert dice(labels, truth) >= dice(without, truth) + 0.02


def test_soft_tissue_section_must_hold_its_lumen() -> None:
    from exact_ct.masks.steps.aorta_contrast import contains_lumen

    spacing = (2.0, 2.0, 4.0)
    lumen = (20, 20, 10.0)
    # a thrombus section round an eccentric lumen (lumen at its edge) is kept
    assert contains_lumen((23, 20, 16.0), lumen, spacing) == (23, 20, 16.0)
    # a section pulled 14 mm away onto a neighbour is replaced by the lumen's own
    assert contains_lumen((27, 20, 10.0), lumen, spacing) == lumen
    # no lumen in that slice (a bridged one): the section stands
    assert contains_lumen((27, 20, 10.0), None, spacing) == (27, 20, 10.0)
