"""Stages build_dataset and train on a toy hospital: package, resume after a kill, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from exact_ct.config import from_dict
from exact_ct.training.config import TrainConfig
from exact_ct.training.loop import LAST, Interrupted, train
from tests.support.toy import TINY_TRAIN, make_toy_interim

TRAIN = TINY_TRAIN
PARAMS = {
    "seed": 7,
    "batches": ["b1"],
    "build_dataset": {
        "profile": "cpu-demo",
        "workers": 1,
        "split": {"train": 0.5, "val": 0.5, "test": 0.0},
        "profiles": {
            "cpu-demo": {"spacing_xyz_mm": [16.0, 16.0, 16.0], "size_xyz": [12, 10, 8], "size_multiple": 2}
        },
    },
    "train": {
        "profile": "cpu-demo",
        "model_name": "toy",
        "profiles": {"cpu-demo": TRAIN, "gpu": {**TRAIN, "device": "cuda"}},
    },
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy hospital of 10 studies through the build_dataset stage's command line."""
    from stages import build_dataset

    root = tmp_path_factory.mktemp("toy")
    make_toy_interim(root, "b1", 10, seed=3, shape=(12, 10, 8), spacing=16.0)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    rc = build_dataset.main(
        [
            "--params",
            str(root / "params.yaml"),
            "--interim",
            str(root / "interim"),
            "--out",
            str(root / "ds"),
            "--reports",
            str(root / "rep"),
        ]
    )
    assert rc == 0
    return root


def _cfg(**overrides: object) -> TrainConfig:
    return from_dict(TrainConfig, {"profiles": {"cpu-demo": {**TRAIN, **overrides}}}, "train")


def _weights(pkg: Path) -> dict[str, torch.Tensor]:
    return torch.load(pkg / "weights.pt", weights_only=True)


def test_train_stage_writes_package_and_dvclive_curves(dataset: Path) -> None:
    from exact_ct.model.package import load_package
    from stages import train as train_stage

    root = dataset
    args = [
        "--params",
        str(root / "params.yaml"),
        "--dataset",
        str(root / "ds"),
        "--out",
        str(root / "models/toy"),
        "--reports",
        str(root / "rt"),
        "--checkpoints",
        str(root / "ck"),
    ]
    assert train_stage.main(args) == 0
    pkg = load_package(root / "models/toy")
    meta = json.loads((root / "models/toy/package.json").read_text())
    assert meta["data_version"] == json.loads((root / "ds/dataset.json").read_text())["data_version"]
    assert meta["params"]["seed"] == 7 and set(pkg.thresholds) == set(meta["schema"]["abnormalities"])
    assert meta["schema"]["organ_regions"]["Pleural effusion"] == {"organs": [4], "margin_mm": 6.0}
    assert pkg.plan.size_xyz == (12, 10, 8)
    dv = json.loads((root / "rt/metrics.json").read_text())
    assert dv["step"] == 1 and "loss" in dv["train"] and "organ_dice_pseudo" in dv["val"]
    tsv = (root / "rt/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert len(tsv) == 3 and "timestamp" not in tsv[0]  # header + 2 epochs; no wall-clock in outputs
    assert (root / "rt/curves.png").stat().st_size > 0
    # rerunning a finished training resumes at its end: same package bytes, no extra epochs
    before = (root / "models/toy/weights.pt").read_bytes()
    assert train_stage.main(args) == 0
    assert (root / "models/toy/weights.pt").read_bytes() == before
    assert len((root / "rt/plots/metrics/train/loss.tsv").read_text().splitlines()) == 3


def test_resume_after_a_kill_mid_epoch_gives_identical_weights(dataset: Path, tmp_path: Path) -> None:
    straight = train(_cfg(), dataset / "ds", tmp_path / "a", tmp_path / "ra", tmp_path / "ca", seed=7)
    with pytest.raises(Interrupted):  # killed in epoch 1, one step after its checkpoint
        train(
            _cfg(checkpoint_every_steps=1),
            dataset / "ds",
            tmp_path / "b",
            tmp_path / "rb",
            tmp_path / "cb",
            seed=7,
            stop_after_steps=4,
        )
    assert torch.load(tmp_path / "cb" / LAST, weights_only=True)["epoch"] == 1
    resumed = train(
        _cfg(checkpoint_every_steps=1),
        dataset / "ds",
        tmp_path / "b",
        tmp_path / "rb",
        tmp_path / "cb",
        seed=7,
    )
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed["val_auroc"] == straight["val_auroc"]
    assert (tmp_path / "ra/plots/metrics/train/loss.tsv").read_text() == (
        tmp_path / "rb/plots/metrics/train/loss.tsv"
    ).read_text()


class _Payload:
    """Pickles to a call of Path.touch: whoever unpickles it runs code (a tampered checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_tampered_checkpoint_with_a_pickled_payload_is_refused(dataset: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    ckpt = tmp_path / "ck" / LAST
    ckpt.parent.mkdir()
    torch.save({"config_hash": "x", "model": {}, "epoch": _Payload(marker)}, ckpt)
    torch.load(ckpt, weights_only=False)  # positive control: the old way runs the payload
    assert marker.exists()
    marker.unlink()
    with pytest.raises(RuntimeError, match=r"last.pt: refused: not a weights-only checkpoint"):
        train(_cfg(), dataset / "ds", tmp_path / "m", tmp_path / "r", tmp_path / "ck", seed=7)
    assert not marker.exists()
    assert not (tmp_path / "m" / "weights.pt").exists()


def test_same_seed_same_metrics_other_seed_other_weights(dataset: Path, tmp_path: Path) -> None:
    a = train(_cfg(epochs=1), dataset / "ds", tmp_path / "a", tmp_path / "ra", tmp_path / "ca", seed=11)
    b = train(_cfg(epochs=1), dataset / "ds", tmp_path / "b", tmp_path / "rb", tmp_path / "cb", seed=11)
    train(_cfg(epochs=1), dataset / "ds", tmp_path / "c", tmp_path / "rc", tmp_path / "cc", seed=12)
    assert a == b
    wa, wb, wc = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert json.loads((tmp_path / "ra/metrics.json").read_text()) == json.loads(
        (tmp_path / "rb/metrics.json").read_text()
    )


def test_workers_do_not_change_the_batches(dataset: Path) -> None:
    from torch.utils.data import DataLoader

    from exact_ct.dataset.build import load_index, load_plan
    from exact_ct.training.config import AugmentConfig
    from exact_ct.training.data import StudyDataset, collate

    rows = load_index(dataset / "ds")
    ds = StudyDataset(rows, dataset / "ds", load_plan(dataset / "ds"), AugmentConfig(noise_std=0.1), seed=1)
    ds.set_epoch(3)
    one = [b["image"] for b in DataLoader(ds, batch_size=2, num_workers=0, collate_fn=collate)]
    two = [b["image"] for b in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)]
    assert all(torch.equal(x, y) for x, y in zip(one, two, strict=True))
    ds.set_epoch(4)
    assert not torch.equal(ds[0]["image"], one[0][0])  # a new epoch draws new augmentations
    assert np.array_equal(ds[0]["organs"].unique().numpy(), np.unique(ds[0]["organs"].numpy()))


@pytest.mark.slow
def test_kill_dash_9_then_rerun_continues_to_the_same_weights(dataset: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    params = {
        **PARAMS,
        "train": {
            **PARAMS["train"],
            "profiles": {"cpu-demo": {**TRAIN, "epochs": 3, "checkpoint_every_steps": 1}},
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = [
        sys.executable,
        "-m",
        "stages.train",
        "--params",
        str(tmp_path / "params.yaml"),
        "--dataset",
        str(dataset / "ds"),
    ]
    args += [
        "--out",
        str(tmp_path / "m"),
        "--reports",
        str(tmp_path / "r"),
        "--checkpoints",
        str(tmp_path / "ck"),
    ]
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "EXACT_MODE": "test"}
    proc = subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "ck" / LAST
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = torch.load(last, weights_only=True)
    assert (killed_at["epoch"], killed_at["step"]) < (3, 0) and not (tmp_path / "m" / "weights.pt").exists()
    assert subprocess.run(args, cwd=repo, env=env, capture_output=True).returncode == 0
    cfg = from_dict(TrainConfig, params["train"], "train")
    train(cfg, dataset / "ds", tmp_path / "straight", tmp_path / "rs", tmp_path / "cs", seed=7)
    wa, wb = _weights(tmp_path / "m"), _weights(tmp_path / "straight")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ema_selection_is_the_weight_average_and_resumes_exactly(dataset: Path, tmp_path: Path) -> None:
    """select: ema publishes the moving average (not the last step's weights), and a kill + resume
    restores the average too, so the package is bit-identical to an uninterrupted run's."""
    straight = train(
        _cfg(select="ema"), dataset / "ds", tmp_path / "a", tmp_path / "ra", tmp_path / "ca", seed=7
    )
    last = train(_cfg(), dataset / "ds", tmp_path / "l", tmp_path / "rl", tmp_path / "cl", seed=7)
    assert straight["selected"] == "ema" and last["selected"] == "last"
    wa, wl = _weights(tmp_path / "a"), _weights(tmp_path / "l")
    assert any(not torch.equal(wa[k], wl[k]) for k in wa if wa[k].is_floating_point())
    with pytest.raises(Interrupted):
        train(
            _cfg(select="ema", checkpoint_every_steps=1),
            dataset / "ds",
            tmp_path / "b",
            tmp_path / "rb",
            tmp_path / "cb",
            seed=7,
            stop_after_steps=3,
        )
    train(
        _cfg(select="ema", checkpoint_every_steps=1),
        dataset / "ds",
        tmp_path / "b",
        tmp_path / "rb",
        tmp_path / "cb",
        seed=7,
    )
    wb = _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
