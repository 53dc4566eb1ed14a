"""The train stage under torchrun (params `parallel.train_nproc_per_node: 2`, gloo on CPU) from one command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.support.toy import TINY_TRAIN

REPO = Path(__file__).resolve().parents[2]

# Augmentation off and no batch statistics in the network (instance norm): two ranks of batch 1 see the
# same pairs of studies per step as one process of batch 2 (EpochSampler shards [0, 2, ...] / [1, 3, ...]).
TRAIN = {
    **{k: v for k, v in TINY_TRAIN.items() if k != "batch_size"},
    "augment": {"affine_prob": 0.0, "intensity_prob": 0.0, "noise_std": 0.0},
}


def _params(root: Path, name: str, nproc: int, batch_size: int) -> Path:
    params = {
        "seed": 7,
        "batches": ["b1"],
        "parallel": {"train_nproc_per_node": nproc},
        "build_dataset": {
            "profile": "cpu-demo",
            "workers": 1,
            "split": {"train": 0.6, "val": 0.4, "test": 0.0},
            "profiles": {"cpu-demo": {"spacing_xyz_mm": [16.0, 16.0, 16.0], "size_xyz": [12, 10, 8], "size_multiple": 2}},
        },
        "train": {"profile": "cpu-demo", "model_name": "toy", "profiles": {"cpu-demo": {**TRAIN, "batch_size": batch_size}}},
    }  # fmt: skip
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _stage(root: Path, params: Path, name: str) -> subprocess.CompletedProcess[str]:
    """`python -m stages.train ...` exactly as dvc.yaml runs it (from the repository root)."""
    cmd = [sys.executable, "-m", "stages.train", "--params", str(params), "--dataset", str(root / "ds"),
           "--out", str(root / name / "model"), "--reports", str(root / name / "reports"),
           "--checkpoints", str(root / name / "ckpt")]  # fmt: skip
    env = {**os.environ, "EXACT_MODE": "test", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy dataset, trained by 2 torchrun processes of batch 1 (ddp/) and by 1 process of batch 2 (single/)."""
    from stages import build_dataset
    from tests.support.toy import make_toy_interim

    tmp_path = tmp_path_factory.mktemp("torchrun")
    make_toy_interim(tmp_path, "b1", 12, seed=3, shape=(12, 10, 8), spacing=16.0)
    ds_params = _params(tmp_path, "ds", 1, 2)
    assert build_dataset.main(["--params", str(ds_params), "--interim", str(tmp_path / "interim"),
                               "--out", str(tmp_path / "ds"), "--reports", str(tmp_path / "ds-rep")]) == 0  # fmt: skip

    ddp = _stage(tmp_path, _params(tmp_path, "ddp", 2, 1), "ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = _stage(tmp_path, _params(tmp_path, "single", 1, 2), "single")
    assert single.returncode == 0, single.stderr[-3000:]
    return tmp_path


@pytest.mark.slow
def test_two_processes_under_torchrun_write_one_package_equal_to_the_single_process_run(runs):
    tmp_path = runs
    # one package, written once (rank 0), with its metrics and curves
    assert sorted(p.name for p in (tmp_path / "ddp" / "model").iterdir()) == sorted(
        p.name for p in (tmp_path / "single" / "model").iterdir()
    )
    assert sorted(p.name for p in (tmp_path / "ddp" / "ckpt").iterdir()) == sorted(
        p.name for p in (tmp_path / "single" / "ckpt").iterdir()
    )
    final = json.loads((tmp_path / "ddp" / "reports" / "final_metrics.json").read_text())
    assert final["epochs"] == 2
    history = torch.load(tmp_path / "ddp" / "ckpt" / "last.pt", weights_only=False)["history"]
    assert [r["epoch"] for r in history] == [0, 1]
    # the logged training loss is the mean over both ranks' batches, as one process of batch 2 logs it
    single = torch.load(tmp_path / "single" / "ckpt" / "last.pt", weights_only=False)["history"]
    for r, q in zip(history, single, strict=True):  # measured: equal to 1e-7 relative
        assert abs(r["train/loss"] - q["train/loss"]) <= 1e-4 * abs(q["train/loss"]), (r, q)

    # the same optimisation: gradients averaged over 2 ranks of batch 1 == one process of batch 2
    a = torch.load(tmp_path / "ddp" / "model" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "single" / "model" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.isfinite(v.float()).all() for v in a.values())
    # relative L1 distance: 5e-5 measured (float sums in another order); batch 1 in one process: 6e-2
    diff = sum(float((a[k].float() - b[k].float()).abs().sum()) for k in a)
    size = sum(float(b[k].float().abs().sum()) for k in b)
    assert diff / size < 1e-3, f"weights differ by {diff / size:.2e} (relative L1)"


@pytest.mark.slow
def test_changing_the_number_of_processes_retrains_instead_of_resuming(runs, tmp_path):
    import shutil

    # the single-process run's finished checkpoint (dvc.yaml: checkpoints persist across runs), then the
    # same profile (batch 2 per process) on 2 processes: another optimisation, which must start afresh
    shutil.copytree(runs / "single" / "ckpt", tmp_path / "ckpt")
    cmd = [sys.executable, "-m", "stages.train", "--params", str(_params(runs, "ddp-b2", 2, 2)),
           "--dataset", str(runs / "ds"), "--out", str(tmp_path / "model"), "--reports", str(tmp_path / "reports"),
           "--checkpoints", str(tmp_path / "ckpt")]  # fmt: skip
    env = {**os.environ, "EXACT_MODE": "test", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    published = (tmp_path / "model" / "weights.pt").read_bytes()
    assert published != (runs / "single" / "model" / "weights.pt").read_bytes()


def test_one_process_or_a_torchrun_worker_is_not_relaunched(monkeypatch):
    from exact_ct.parallel import torchrun_relaunch

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert torchrun_relaunch("stages.train", ["--help"], 1) is None
    monkeypatch.setenv("LOCAL_RANK", "0")  # already under torchrun: go on in this process
    assert torchrun_relaunch("stages.train", ["--help"], 2) is None
