"""The shared Trainer (hooks, checkpoint and resume, weight average, selection) and the training metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from exact_ct.training.metrics import dice, dice_per_label, macro, nan_to_none
from exact_ct.training.trainer import BEST, LAST, Interrupted, LoopOptions, Trainer


class _Regression(Trainer):
    """y = 3x - 1 by a linear layer: a trainer with every hook, and a call log."""

    def __init__(self, ckpt: Path | None, **options: Any) -> None:
        torch.manual_seed(0)
        net = torch.nn.Linear(1, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        self.x = torch.linspace(-1, 1, 8)[:, None]
        self.y = 3 * self.x - 1
        self.calls: list[str] = []
        super().__init__(
            net,
            opt,
            LoopOptions(**{"epochs": 3, "checkpoint_every_steps": 1, **options}),
            device=torch.device("cpu"),
            checkpoints_dir=ckpt,
            config_hash="toy",
        )

    def epoch_batches(self, epoch: int, skip: int) -> list[torch.Tensor]:
        order = torch.from_numpy(np.random.default_rng([epoch]).permutation(8))
        return list(order.split(2))[skip:]

    def on_epoch_start(self, epoch: int) -> None:
        self.calls.append(f"start {epoch}")

    def train_step(self, batch: torch.Tensor, epoch: int, step: int) -> dict[str, torch.Tensor]:
        err = self.model(self.x[batch]) - self.y[batch]
        return {"loss": (err**2).mean(), "abs": err.abs().mean().detach()}

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        self.calls.append(f"end {epoch}")
        self.keep_if_best(-record["train/loss"], epoch, self.net)

    def on_train_end(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.net.state_dict().items()}


def test_the_hooks_run_in_order_and_the_record_holds_each_loss_part(tmp_path: Path) -> None:
    t = _Regression(tmp_path)
    t.run()
    assert t.calls == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]
    assert [set(r) for r in t.state.history] == [{"epoch", "train/loss", "train/abs"}] * 3
    assert t.state.history[-1]["train/loss"] < t.state.history[0]["train/loss"]
    assert t.state.global_step == 12 and (tmp_path / LAST).is_file()
    assert t.state.best_epoch == 2 and (tmp_path / BEST).is_file()


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path: Path) -> None:
    straight = _Regression(tmp_path / "a").run()
    with pytest.raises(Interrupted):
        _Regression(tmp_path / "b", stop_after_steps=6).run()
    resumed = _Regression(tmp_path / "b")
    out = resumed.run()
    assert resumed.calls[0] == "start 1"  # epoch 0 was not redone
    assert all(torch.equal(straight[k], out[k]) for k in straight)


def test_the_weight_average_is_checkpointed_and_selected(tmp_path: Path) -> None:
    straight = _Regression(tmp_path / "a", ema_decay=0.5)
    straight.run()
    assert straight.ema is not None
    assert not torch.equal(straight.ema["weight"], straight.net.state_dict()["weight"])
    with pytest.raises(Interrupted):
        _Regression(tmp_path / "b", ema_decay=0.5, stop_after_steps=5).run()
    resumed = _Regression(tmp_path / "b", ema_decay=0.5)
    resumed.run()
    assert resumed.ema is not None and torch.equal(straight.ema["weight"], resumed.ema["weight"])
    resumed.select_weights("ema")
    assert torch.equal(resumed.net.state_dict()["weight"], straight.ema["weight"])


def test_without_a_checkpoints_folder_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative default path would land here
    t = _Regression(None, progress="epoch")
    t.run()
    assert len(t.state.history) == 3 and not any(tmp_path.iterdir())


def test_dice_is_the_overlap_ratio_and_undefined_when_both_masks_are_empty() -> None:
    a = np.zeros((6, 5, 4), bool)
    b = a.copy()
    assert dice(a, b) is None
    a[1:3, 1:3, 1:3] = True  # 8 voxels
    assert dice(a, b) == 0.0
    b[2:4, 1:3, 1:3] = True  # 8 voxels, 4 shared
    assert dice(a, b) == 2 * 4 / 16
    labels = np.where(a, 1, 0) + np.where(b & ~a, 2, 0)
    assert dice_per_label(labels, labels, [1, 2, 3]) == {1: 1.0, 2: 1.0, 3: None}


def test_macro_skips_undefined_values_and_is_none_without_any() -> None:
    assert macro({"a": 0.5, "b": None, "c": float("nan"), "d": 1.0}) == 0.75
    assert macro({"a": None, "b": float("nan")}) is None
    assert nan_to_none({"x": [float("nan"), 1.0], "y": {"z": float("nan")}}) == {
        "x": [None, 1.0],
        "y": {"z": None},
    }


def test_checkpoint_every_steps_zero_means_epoch_ends_only() -> None:
    from exact_ct.config import from_dict
    from exact_ct.training.config import TrainConfig

    cfg = from_dict(TrainConfig, {"profile": "p", "profiles": {"p": {"checkpoint_every_steps": 0}}}, "train")
    assert cfg.active().checkpoint_every_steps == 0
