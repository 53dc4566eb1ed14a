"""The shared foundation: schema constants, atomic writes, pseudonymisation, typed configs, executor."""

from __future__ import annotations

import dataclasses
import os

import nibabel as nib
import numpy as np
import pytest

from exact_ct import config, io, parallel, privacy, schema


def test_abnormalities_are_the_18_ct_rate_labels_in_order():
    assert len(schema.ABNORMALITIES) == 18
    assert schema.ABNORMALITIES[0] == "Medical material"
    assert schema.ABNORMALITIES[-1] == "Interlobular septal thickening"
    assert set(schema.DEFAULT_ORGAN_REGIONS) == set(schema.ABNORMALITIES)


def test_organ_regions_use_valid_ids_and_overrides_are_checked():
    assert schema.ORGANS[1] == "lung_left" and schema.ORGANS[9] == "body"
    regions = schema.organ_regions({"Lung nodule": [2]})
    assert regions["Lung nodule"] == (2,)
    with pytest.raises(ValueError, match="invalid organ ids"):
        schema.organ_regions({"Lung nodule": [0]})
    with pytest.raises(KeyError, match="unknown abnormality"):
        schema.organ_regions({"Lung nodules": [1]})


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_save_nifti_is_reproducible_and_round_trips_geometry(tmp_path):
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-100, -120, 30]
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    io.save_nifti(data, affine, a)
    io.save_nifti(data, affine, b)
    assert a.read_bytes() == b.read_bytes()
    arr, aff = io.load_canonical(a)
    np.testing.assert_array_equal(arr, data)
    np.testing.assert_allclose(aff, affine)
    assert io.spacing_from_affine(aff) == pytest.approx((0.7, 0.8, 2.5))
    assert nib.load(str(a)).get_data_dtype() == np.int16


def test_load_canonical_reorients_lps_to_ras(tmp_path):
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])  # LPS-like storage
    data = np.zeros((3, 3, 2), np.int16)
    data[0, 0, 0] = 7  # the most patient-left, posterior voxel... in LPS index order
    io.save_nifti(data, affine, tmp_path / "x.nii.gz")
    arr, aff = io.load_canonical(tmp_path / "x.nii.gz")
    assert nib.aff2axcodes(aff) == ("R", "A", "S")
    assert arr[2, 2, 0] == 7


def test_pseudonyms_are_keyed_stable_and_prefixed(monkeypatch):
    monkeypatch.setenv(privacy.KEY_ENV, "test-key-one-7f3a9c2e")
    a = privacy.study_pseudonym("ACC123")
    assert a == privacy.study_pseudonym("ACC123") and a.startswith("s-") and len(a) == 18
    assert "ACC123" not in a
    monkeypatch.setenv(privacy.KEY_ENV, "test-key-two-b81d04f6")
    assert privacy.study_pseudonym("ACC123") != a
    assert privacy.patient_pseudonym("P1").startswith("p-")


def test_missing_key_outside_demo_mode_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    monkeypatch.setenv(privacy.MODE_ENV, "production")
    with pytest.raises(privacy.MissingKeyError, match="EXACT_PSEUDONYM_KEY"):
        privacy.pseudonymise("x")
    monkeypatch.setenv(privacy.MODE_ENV, "demo")
    assert privacy.pseudonymise("x") == privacy.pseudonymise("x", privacy.INSECURE_DEMO_KEY.encode())


@dataclasses.dataclass(frozen=True)
class _Inner:
    k: int = 3


@dataclasses.dataclass(frozen=True)
class _Cfg:
    workers: int = 1
    sizes: tuple[int, ...] = (1, 2)
    inner: _Inner = _Inner()


def test_config_rejects_unknown_keys_and_builds_nested_frozen_sections():
    cfg = config.from_dict(_Cfg, {"workers": 2, "sizes": [4, 5], "inner": {"k": 9}}, "ingest")
    assert cfg == _Cfg(2, (4, 5), _Inner(9))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.workers = 3  # type: ignore[misc]
    with pytest.raises(config.ConfigError, match=r"'ingest'.*unknown key\(s\) \['wrokers'\]"):
        config.from_dict(_Cfg, {"wrokers": 2}, "ingest")
    with pytest.raises(config.ConfigError, match="inner"):
        config.from_dict(_Cfg, {"inner": {"q": 1}}, "ingest")


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_map_ordered_keeps_input_order(workers):
    assert list(parallel.map_ordered(_square, range(7), workers=workers, progress=False)) == [
        i * i for i in range(7)
    ]


def test_repository_params_file_has_every_stage_section():
    from pathlib import Path

    params = config.load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    for name in ("seed", "batches", "ingest", "parse_reports", "pseudo_masks"):
        assert name in params, name
    assert os.environ.get("EXACT_MODE") == "test"


def test_every_command_of_the_design_contract_is_registered():
    from exact_ct.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    expected = {
        "synth",
        "register",
        "ingest",
        "label-reports",
        "pseudo-masks",
        "import-totalseg",
        "infer",
        "finetune",
        "embed",
        "retrain",
        "serve",
    }
    assert expected <= set(sub.choices)


def test_map_ordered_consumes_a_generator_lazily():
    pulled: list[int] = []

    def gen():
        for i in range(100):
            pulled.append(i)
            yield i

    results = parallel.map_ordered(_square, gen(), workers=2, progress=False)
    assert next(results) == 0
    assert len(pulled) <= 5  # a window of 2 * workers, not the whole input
    assert list(results) == [i * i for i in range(1, 100)]


def test_a_profile_inherits_another_and_lists_only_what_differs():
    from exact_ct.config import ConfigError, resolve_profile
    from exact_ct.training.config import TrainConfig

    profiles = {
        "cpu-demo": {"lr": 0.008, "loss": {"max_pos_weight": 5.0, "average_scales": True}, "epochs": 4},
        "gpu": {"inherits": "cpu-demo", "lr": 0.001, "loss": {"max_pos_weight": 20.0}, "device": "cuda"},
    }
    gpu = config.from_dict(TrainConfig, {"profile": "gpu", "profiles": profiles}).active()
    assert (gpu.lr, gpu.epochs, gpu.device) == (0.001, 4, "cuda")
    # nested sections merge key by key: the inherited average_scales stays, the cap is overridden
    assert gpu.loss.average_scales is True and gpu.loss.max_pos_weight == 20.0
    with pytest.raises(ConfigError, match="cycle"):
        resolve_profile({"a": {"inherits": "b"}, "b": {"inherits": "a"}}, "a", "train.profiles")
    with pytest.raises(ConfigError, match="'nope'"):
        resolve_profile({"a": {"inherits": "nope"}}, "a", "train.profiles")


def test_organ_weight_decays_exponentially_to_its_floor_as_exact_does():
    from exact_ct.model.losses import LossConfig, organ_loss_weight

    cfg = LossConfig(
        organ_weight_start=2.0, organ_weight_end=0.5, organ_weight_epochs=10, organ_weight_decay="exp"
    )
    assert organ_loss_weight(cfg, 0) == 2.0
    assert organ_loss_weight(cfg, 1) == pytest.approx(2.0 * np.exp(-1.0))
    assert organ_loss_weight(cfg, 9) == 0.5
