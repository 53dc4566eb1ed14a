"""The training loop shared by pretraining and fine-tuning: a :class:`Trainer` with hooks (as nnU-Net's
``nnUNetTrainer``).

The Trainer owns what every run does the same way: the optimiser step (AMP gradient scaling, gradient
clipping, LR schedule), the exponential moving average of the weights, checkpoint and resume, DDP
wrapping, the progress bar, dvclive logging and the choice of the published weights (``last``, ``ema``,
``best_val``). A subclass supplies the task through hooks:

- :meth:`Trainer.epoch_batches`: the epoch's batches, after those a resumed run already did;
- :meth:`Trainer.on_epoch_start`: per-epoch settings (loss weights, frozen parts);
- :meth:`Trainer.train_step`: forward pass and losses, ``{"loss": total, <part>: ...}``;
- :meth:`Trainer.on_epoch_end`: validation, adding to the epoch's record;
- :meth:`Trainer.on_train_end`: what the run returns (a model package, the fitted network).

Resume contract (what a rerun after ``kill -9`` restores from ``<checkpoints>/last.pt``): model weights,
optimizer state (AdamW moments), LR scheduler state, GradScaler state, the weight average, epoch, batches
done in that epoch, global step, best validation score and its epoch, the per-epoch records (replayed into
dvclive so curves stay complete), the running loss sums of the epoch, and the torch / numpy / python RNG
states. When the batches are functions of (seed, epoch, index), the rerun sees exactly the batches the
killed run would have seen next. A checkpoint whose config hash differs is ignored: training restarts from
scratch rather than mixing two experiments.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from exact_ct.logs import progress
from exact_ct.training.runtime import (
    DistInfo,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
    update_ema,
)

log = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"


class Batches(Protocol):
    """What :meth:`Trainer.epoch_batches` returns: a list of batches or a DataLoader."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


class Interrupted(RuntimeError):
    """Raised by the test hook ``stop_after_steps`` to simulate a kill right after a checkpoint."""


def live_log(live: Any, record: dict[str, Any]) -> None:
    """One epoch's record into dvclive (undefined values, None or NaN, are left out of the curves)."""
    for key, value in sorted(record.items()):
        if key == "epoch" or value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        live.log_metric(key, float(value))
    live.next_step()


@dataclass(frozen=True)
class LoopOptions:
    """How the shared loop runs (the subclass derives these from its own config).

    Attributes:
        epochs: passes over the data.
        grad_clip: maximum gradient norm (0 disables).
        amp: mixed precision on CUDA: ``bf16``, ``fp16`` (with gradient scaling) or ``none``; CPU runs
            always use ``none``.
        ema_decay: decay per step of the weight average kept (and checkpointed) beside the weights;
            None keeps no average.
        checkpoint_every_steps: steps between mid-epoch checkpoints (0: at epoch ends only); needs the
            Trainer's ``checkpoints_dir``.
        stop_after_steps: test hook: raise :class:`Interrupted` right after the checkpoint written at
            that global step, as if the process had been killed there.
        progress: ``step``: a bar per epoch over its steps; ``epoch``: one bar over the epochs.
        description: the bar's label.
    """

    epochs: int
    grad_clip: float = 0.0
    amp: str = "none"
    ema_decay: float | None = None
    checkpoint_every_steps: int = 0
    stop_after_steps: int | None = None
    progress: str = "step"
    description: str = "epoch"


@dataclass
class TrainState:
    """Where the run is; checkpointed (field order is the checkpoint's key order) and restored on resume.

    Attributes:
        epoch: the epoch in progress (number of finished epochs).
        step: batches done in that epoch.
        global_step: optimiser steps since the start.
        best: best validation score so far (-1 before the first).
        best_epoch: its epoch (-1 before the first).
        history: one record per finished epoch (``train/<loss part>`` means and the subclass's entries).
        sums: running loss sums of the epoch in progress and their count ``n`` (None at an epoch start).
    """

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    best: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class Trainer:
    """Epochs of optimiser steps with checkpoints; subclasses fill in the hooks (module docstring).

    Args:
        net: the network being trained (unwrapped; the Trainer wraps it in DDP under torchrun).
        optimizer: its optimiser.
        options: how the loop runs.
        device: where the network lives.
        scheduler: LR scheduler stepped after every optimiser step, or None (constant LR).
        dist: the process group (:func:`setup_distributed`); single process when None.
        checkpoints_dir: ``last.pt`` / ``best.pt`` go here (and a run resumes from ``last.pt``); None
            writes no checkpoints.
        config_hash: identifies the experiment; a ``last.pt`` with another hash is not resumed.
        reports_dir: dvclive curves go here (main rank only); None logs no curves.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        options: LoopOptions,
        *,
        device: torch.device,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        dist: DistInfo | None = None,
        checkpoints_dir: Path | None = None,
        config_hash: str = "",
        reports_dir: Path | None = None,
    ) -> None:
        self.net = net
        self.optimizer = optimizer
        self.options = options
        self.device = device
        self.scheduler = scheduler
        self.dist = dist or DistInfo()
        self.checkpoints_dir = Path(checkpoints_dir) if checkpoints_dir is not None else None
        self.config_hash = config_hash
        self.reports_dir = Path(reports_dir) if reports_dir is not None else None
        self.amp = options.amp if device.type == "cuda" else "none"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.model: torch.nn.Module = net  # what the forward pass calls: the DDP wrapper under torchrun
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                net, device_ids=[self.dist.local_rank] if device.type == "cuda" else None
            )
        self.state = TrainState()
        self.ema: dict[str, torch.Tensor] | None = None
        self.live: Any = None

    # --- hooks ------------------------------------------------------------------------------------------

    def epoch_batches(self, epoch: int, skip: int) -> Batches:
        """The batches of ``epoch`` this process trains on, without the first ``skip`` (already done)."""
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the epoch's first step (after :meth:`epoch_batches`)."""

    def train_step(self, batch: Any, epoch: int, step: int) -> dict[str, torch.Tensor]:
        """Forward pass of one batch: ``{"loss": what is minimised, <part>: ...}``; every entry is
        averaged over the epoch into the record as ``train/<name>``."""
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        """Validate and add to ``record`` (logged to dvclive and kept in the history afterwards)."""

    def on_train_end(self) -> Any:
        """What :meth:`run` returns, after the last epoch."""
        return None

    # --- the loop ---------------------------------------------------------------------------------------

    def run(self) -> Any:
        """Train (resuming from ``last.pt`` when it belongs to this experiment), then :meth:`on_train_end`."""
        o = self.options
        if o.ema_decay is not None:
            self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.resume()
        self._open_logs()
        epochs = range(self.state.epoch, o.epochs)
        if o.progress == "epoch":
            bar = progress(epochs, o.description, enabled=self.dist.main, unit="epoch")
            for epoch in bar:
                self._train_epoch(epoch)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{self.state.history[-1]['train/loss']:.4f}")
        else:
            for epoch in epochs:
                self._train_epoch(epoch)
        out = self.on_train_end()
        if self.live is not None:
            self.live.end()
        return out

    def _sum_over_ranks(self, sums: dict[str, Any]) -> dict[str, Any]:
        """``sums`` added up over the process group (every rank calls this at the same point)."""
        import torch.distributed as dist

        keys = sorted(sums)
        totals = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)
        return dict(zip(keys, totals.tolist(), strict=True))

    def _train_epoch(self, epoch: int) -> None:
        o, st = self.options, self.state
        done = st.step if epoch == st.epoch else 0
        batches = self.epoch_batches(epoch, done)
        self.on_epoch_start(epoch)
        sums: dict[str, Any] = st.sums or {}
        self.model.train()
        steps: Iterable[Any] = batches
        if o.progress == "step":  # a terminal bar on the main rank only
            steps = progress(
                batches,
                f"{o.description} {epoch + 1}/{o.epochs}",
                enabled=self.dist.main,
                initial=done,
                total=done + len(batches),
                unit="step",
            )
        for step, batch in enumerate(steps, start=done):
            losses = self.train_step(batch, epoch, step)
            self.optimizer_step(losses["loss"])
            sums = {
                **{k: sums.get(k, 0.0) + v.item() for k, v in losses.items()},
                "n": sums.get("n", 0) + 1,
            }
            st.step, st.global_step, st.sums = step + 1, st.global_step + 1, sums
            if o.checkpoint_every_steps > 0 and st.global_step % o.checkpoint_every_steps == 0:
                self.checkpoint()
            if o.stop_after_steps is not None and st.global_step >= o.stop_after_steps:
                self.checkpoint()
                raise Interrupted(f"stopped after global step {st.global_step}")
        if self.dist.world > 1:  # the epoch's means over every process's batches, not rank 0's alone
            sums = self._sum_over_ranks(sums)
        n = max(1, sums.get("n", 0))
        # interned keys: one string object per name across epochs, as the checkpoint pickles (and stores) them once
        means = {sys.intern(f"train/{k}"): v / n for k, v in sums.items() if k != "n"}
        record: dict[str, Any] = {"epoch": epoch, **means}
        self.on_epoch_end(epoch, record)
        if self.live is not None:
            live_log(self.live, record)
        st.history = [*st.history, record]
        st.epoch, st.step, st.sums = epoch + 1, 0, None
        self.checkpoint()
        if self.dist.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward, (unscale and clip,) step, LR schedule, weight average."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.options.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None and self.options.ema_decay is not None:
            update_ema(self.ema, self.net, self.options.ema_decay, self.state.global_step)

    # --- checkpoints, logs, selection -------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Write ``last.pt`` (main rank, when there is a checkpoints folder)."""
        if not self.dist.main or self.checkpoints_dir is None:
            return
        save_atomic(
            {
                "config_hash": self.config_hash,
                "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                **({"scheduler": self.scheduler.state_dict()} if self.scheduler is not None else {}),
                "scaler": self.scaler.state_dict(),
                "rng": rng_state(),
                **({"ema": self.ema} if self.ema is not None else {}),
                **self.state.as_dict(),
            },
            self.checkpoints_dir / LAST,
        )

    def resume(self) -> None:
        """Restore everything ``last.pt`` holds when it belongs to this experiment (module docstring)."""
        if self.checkpoints_dir is None or not (self.checkpoints_dir / LAST).is_file():
            return
        last = self.checkpoints_dir / LAST
        ckpt = load_checkpoint(last, self.device)
        if ckpt.get("config_hash") != self.config_hash:
            log.warning("%s belongs to another configuration (hash differs); starting from scratch", last)
            return
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        if self.ema is not None:
            self.ema = {k: v.to(self.device) for k, v in ckpt["ema"].items()}
        self.state = TrainState(**{f.name: ckpt[f.name] for f in dataclasses.fields(TrainState)})
        log.info("resuming from %s: epoch %d, step %d", last, self.state.epoch, self.state.step)

    def _open_logs(self) -> None:
        if not self.dist.main:
            return
        if self.reports_dir is not None:
            from dvclive import Live

            self.reports_dir.mkdir(parents=True, exist_ok=True)
            self.live = Live(
                dir=str(self.reports_dir), resume=False, save_dvc_exp=False, dvcyaml=None, report=None
            )
            for record in self.state.history:  # a resumed run rewrites the complete curves
                live_log(self.live, record)
        if self.checkpoints_dir is not None:
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)

    def keep_if_best(self, score: float | None, epoch: int, net: torch.nn.Module) -> None:
        """Remember ``net``'s weights as ``best.pt`` when ``score`` beats every earlier epoch's."""
        if score is None or math.isnan(score) or score <= self.state.best:
            return
        self.state.best, self.state.best_epoch = score, epoch
        if self.checkpoints_dir is not None:
            save_atomic(
                {"model": net.state_dict(), "epoch": epoch, "config_hash": self.config_hash},
                self.checkpoints_dir / BEST,
            )

    def select_weights(self, select: str) -> None:
        """Load the published weights into ``net``: ``last`` (the final step's, as they are), ``ema`` (the
        weight average) or ``best_val`` (``best.pt``, when an epoch was scored)."""
        if select == "ema" and self.ema is not None:
            self.net.load_state_dict(self.ema)
        elif (
            select == "best_val"
            and self.checkpoints_dir is not None
            and (self.checkpoints_dir / BEST).is_file()
        ):
            self.net.load_state_dict(load_checkpoint(self.checkpoints_dir / BEST, self.device)["model"])
