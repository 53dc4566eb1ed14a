"""build_dataset: grid geometry round trip, label policy, stable patient split, cache, index, determinism."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from exact_ct.config import ConfigError, from_dict, section
from exact_ct.dataset.build import build_dataset, load_index, load_plan
from exact_ct.dataset.cache import load_npz, save_npz
from exact_ct.dataset.config import BuildDatasetConfig
from exact_ct.dataset.grid import GridPlan, mask_to_model_grid, to_canonical, to_model_grid
from exact_ct.dataset.labels import TRUTH_PREFIX, UNCERTAIN_PREFIX, binarise
from exact_ct.dataset.split import SplitConfig, assign_split
from exact_ct.io import save_nifti, sha256_file
from exact_ct.reports.batch import LabelConfig
from exact_ct.reports.policy import BinaryPolicy
from exact_ct.schema import ABNORMALITIES
from tests.support.toy import make_toy_interim, toy_study

SHAPE = (20, 16, 12)


def config(**grid: object) -> BuildDatasetConfig:
    profile = {"spacing_xyz_mm": [12.0, 12.0, 12.0], "size_xyz": [16, 16, 8], **grid}
    return from_dict(BuildDatasetConfig, {"workers": 1, "profiles": {"cpu-demo": profile}}, "build_dataset")


def test_cache_geometry_round_trip_maps_back_onto_the_canonical_grid() -> None:
    rng = np.random.default_rng(1)
    hu, aff, organs, lesions = toy_study(rng, (40, 32, 24), 5.0, {"Lung nodule"})
    aff = aff.copy()
    aff[0, 0], aff[:3, 3] = 4.0, [-71.0, 20.0, -333.0]  # anisotropic and off-centre
    plan = GridPlan(spacing_xyz_mm=(6.0, 6.0, 6.0), size_xyz=(32, 32, 24))
    image, g_aff = to_model_grid(hu, aff, plan)
    assert image.shape == plan.size_xyz and image.dtype == np.int16
    assert np.allclose(np.diag(g_aff)[:3], 6.0)  # a fixed physical spacing, not a resize
    nod = lesions["Lung nodule"]
    nod_grid = mask_to_model_grid(nod, aff, g_aff, plan)
    back = to_canonical(nod_grid.astype(np.float32), g_aff, aff, hu.shape, order=1)
    # the lesion's centre lands where it was, in world millimetres
    c0 = aff[:3, :3] @ np.array(ndimage.center_of_mass(nod)) + aff[:3, 3]
    c1 = aff[:3, :3] @ np.array(ndimage.center_of_mass(back)) + aff[:3, 3]
    assert np.linalg.norm(c0 - c1) < 3.0
    org_back = to_canonical(mask_to_model_grid(organs, aff, g_aff, plan), g_aff, aff, hu.shape, order=0)
    assert org_back.shape == organs.shape and (org_back == organs).mean() > 0.9


def test_body_is_centred_and_cropped_symmetrically() -> None:
    hu = np.full((30, 30, 10), -1000, np.int16)
    hu[20:28, 5:25, :] = 40  # body off-centre along x
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    image, g_aff = to_model_grid(
        hu, aff, GridPlan(spacing_xyz_mm=(2.0, 2.0, 2.0), size_xyz=(12, 24, 10), antialias=False)
    )
    body_x = np.flatnonzero((image > -500).any(axis=(1, 2)))
    assert (body_x.min(), body_x.max()) == (2, 9)  # 8 voxels wide, centred in 12


def test_label_policy_binarises_and_flags_uncertain() -> None:
    raw = pd.DataFrame({n: [1, 0, -1, None] for n in ABNORMALITIES})
    labels, unc, problems = binarise(raw, BinaryPolicy(not_mentioned=0, uncertain=1))
    assert labels["Lung nodule"].tolist() == [1, 0, 1, 0]
    assert unc[UNCERTAIN_PREFIX + "Lung nodule"].tolist() == [0, 0, 1, 0]
    assert not problems
    labels, _, _ = binarise(raw, BinaryPolicy(not_mentioned=1, uncertain=0))
    assert labels["Lung nodule"].tolist() == [1, 0, 0, 1]
    raw.loc[0, "Emphysema"] = 7
    assert binarise(raw, BinaryPolicy())[2] == ["row 0, column 'Emphysema': value 7.0"]


def test_training_refuses_a_masking_policy_naming_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"build_dataset\.binary_policy\.uncertain: null.*train\.loss\.uncertain"
    ):
        from_dict(BuildDatasetConfig, {"binary_policy": {"uncertain": None}}, "build_dataset")
    with pytest.raises(ConfigError, match=r"build_dataset\.binary_policy\.not_mentioned: null"):
        from_dict(BuildDatasetConfig, {"binary_policy": {"not_mentioned": None}}, "build_dataset")
    with pytest.raises(ValueError, match="null"):
        binarise(pd.DataFrame({n: [1] for n in ABNORMALITIES}), BinaryPolicy(uncertain=None))


def test_the_repositorys_params_set_the_policy_once_without_warnings() -> None:
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = section(BuildDatasetConfig, "build_dataset", params)
        section(LabelConfig, "parse_reports", params)
    assert cfg.binary_policy == BinaryPolicy(not_mentioned=0, uncertain=1)


def test_the_old_policy_key_is_read_for_one_release_with_a_warning() -> None:
    with pytest.warns(
        FutureWarning, match=r"build_dataset\.labels is deprecated.*build_dataset\.binary_policy"
    ):
        cfg = from_dict(BuildDatasetConfig, {"labels": {"not_mentioned": 1, "uncertain": 0}}, "build_dataset")
    assert cfg.binary_policy == BinaryPolicy(not_mentioned=1, uncertain=0)
    assert cfg.labels is None
    with pytest.raises(ConfigError, match="both `labels` and `binary_policy`"):
        from_dict(
            BuildDatasetConfig,
            {"labels": {"uncertain": 0}, "binary_policy": {"uncertain": 0}},
            "build_dataset",
        )
    with pytest.warns(FutureWarning, match=r"parse_reports\.binary_policy is deprecated and ignored"):
        from_dict(LabelConfig, {"binary_policy": {"uncertain": 0}}, "parse_reports")


def test_split_depends_on_patient_only_and_follows_fractions() -> None:
    cfg = SplitConfig(train=0.6, val=0.2, test=0.2)
    splits = [assign_split(f"p-{i}", cfg) for i in range(2000)]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.6, abs=0.05) and share["val"] == pytest.approx(0.2, abs=0.05)
    assert assign_split("p-7", cfg) == assign_split("p-7", SplitConfig(train=0.6, val=0.2, test=0.2))
    with pytest.raises(ValueError):
        SplitConfig(train=0.5, val=0.2, test=0.2)


def test_deterministic_npz_bytes(tmp_path: Path) -> None:
    arrays = {"image": np.arange(60, dtype=np.int16).reshape(3, 4, 5), "grid_affine": np.eye(4)}
    save_npz(tmp_path / "a.npz", arrays)
    save_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert np.array_equal(load_npz(tmp_path / "a.npz")["image"], arrays["image"])


@pytest.fixture()
def toy_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EXACT_MODE", "test")
    make_toy_interim(tmp_path, "b1", 8, seed=1, shape=SHAPE, spacing=10.0, patients=5, with_truth=True)
    return tmp_path


def test_build_dataset_writes_index_cache_plan_and_prevalence(toy_root: Path) -> None:
    out, rep = toy_root / "ds", toy_root / "rep"
    summary = build_dataset(config(), ["b1"], toy_root / "interim", out, rep, toy_root / "synth")
    index = load_index(out)
    assert len(index) == 8 and summary["studies"] == 8 and summary["with_truth"] == 8
    # every patient lies in exactly one split
    assert index.groupby("patient_id")["split"].nunique().max() == 1
    raw = pd.read_csv(toy_root / "interim/parse_reports/b1/labels.csv").set_index("study_id")
    reported = raw.loc[index["study_id"], "Lung nodule"]
    # not mentioned -> 0, absent -> 0, present -> 1, uncertain -> 1 (and flagged)
    assert (index["Lung nodule"].to_numpy() == reported.isin([1, -1]).to_numpy().astype(int)).all()
    assert reported.isna().any() and reported.isin([1, -1]).any()
    assert (
        index[UNCERTAIN_PREFIX + "Lung nodule"]
        == (raw.loc[index["study_id"], "Lung nodule"] == -1).to_numpy()
    ).all()
    assert index[TRUTH_PREFIX + "Lung nodule"].notna().all()
    plan = load_plan(out)
    assert plan.size_xyz == (16, 16, 8) and plan.clip_hu[0] < -700 < plan.clip_hu[1]
    z = load_npz(out / index["cache"][0])
    assert z["image"].shape == (16, 16, 8) and z["image"].dtype == np.int16 and z["organs"].dtype == np.uint8
    assert z["truth_lesions"].shape == (18, 16, 16, 8) and tuple(z["src_shape"]) == SHAPE
    fp = json.loads((out / "fingerprint.json").read_text())
    assert fp["spacing_xyz_mm"]["median"] == [10.0, 10.0, 10.0] and fp["intensity_hu"]["lung_left"]["n"] > 0
    prev = json.loads((rep / "prevalence.json").read_text())
    assert sum(prev[s]["studies"] for s in ("train", "val", "test")) == 8
    n_pos = int(index["Lung nodule"].sum())
    assert sum(prev[s]["abnormalities"]["Lung nodule"]["positive"] for s in prev) == n_pos


def test_build_dataset_is_byte_reproducible(toy_root: Path) -> None:
    a = build_dataset(config(), ["b1"], toy_root / "interim", toy_root / "a", toy_root / "ra", None)
    b = build_dataset(config(), ["b1"], toy_root / "interim", toy_root / "b", toy_root / "rb", None)
    assert a["data_version"] == b["data_version"]
    for name in ("index.csv", "plan.json", "fingerprint.json"):
        assert sha256_file(toy_root / "a" / name) == sha256_file(toy_root / "b" / name)


def test_split_is_stable_when_a_batch_is_added(toy_root: Path) -> None:
    make_toy_interim(toy_root, "b2", 6, seed=2, shape=SHAPE, spacing=10.0, patients=6)
    build_dataset(config(), ["b1"], toy_root / "interim", toy_root / "one", toy_root / "r1")
    build_dataset(config(), ["b1", "b2"], toy_root / "interim", toy_root / "two", toy_root / "r2")
    one = load_index(toy_root / "one").set_index("study_id")["split"]
    two = load_index(toy_root / "two").set_index("study_id")
    assert len(two) == 14 and set(two["batch"]) == {"b1", "b2"}
    assert (two.loc[one.index, "split"] == one).all()


def test_missing_pseudo_mask_is_quarantined_with_a_reason(toy_root: Path) -> None:
    masks = sorted((toy_root / "interim/pseudo_masks/b1/masks").glob("*.nii.gz"))
    masks[0].unlink()
    bad = np.zeros((3, 3, 3), np.uint8)
    save_nifti(bad, np.eye(4), masks[1], dtype=np.uint8)  # wrong grid
    build_dataset(config(), ["b1"], toy_root / "interim", toy_root / "ds", toy_root / "rep")
    q = pd.read_csv(toy_root / "ds/quarantine.csv")
    assert sorted(q["rule"]) == ["mask_grid", "pseudo_mask_exists"]
    assert len(load_index(toy_root / "ds")) == 6
