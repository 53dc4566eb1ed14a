"""Weakly supervised training of ExactNet on the shared :class:`~exact_ct.training.trainer.Trainer`:
organ-confined MIL BCE on the report labels plus organ Dice+CE on the pseudo masks, validation AUROC per
epoch, then a model package from the selected weights.

Data order and augmentation are functions of (seed, epoch, index), so a resumed run sees exactly the
batches the killed run would have seen next (the resume contract is the Trainer's). The config hash that
decides whether ``last.pt`` is resumed covers the profile, the data version, the seed and the number of
processes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from exact_ct.dataset.build import load_index, load_plan
from exact_ct.devices import choose_device
from exact_ct.io import atomic_path, write_json_atomic
from exact_ct.model.losses import (
    OrganLoss,
    apply_uncertain_policy,
    organ_loss_weight,
    pos_weight_from_labels,
    pseudo_mask_probability,
    weighted_bce,
)
from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage, make_pool, save_package
from exact_ct.model.pooling import OrganConfinedMILPool
from exact_ct.model.predict import predict
from exact_ct.schema import ABNORMALITIES, NUM_ORGAN_CLASSES
from exact_ct.training import metrics as M
from exact_ct.training.config import TrainConfig, TrainProfile
from exact_ct.training.data import (
    IMAGE_KEY,
    LABELS_KEY,
    ORGANS_KEY,
    UNCERTAIN_KEY,
    EpochSampler,
    StudyDataset,
    collate,
)
from exact_ct.training.runtime import (
    autocast,
    config_hash,
    finish_distributed,
    lr_lambda,
    seed_everything,
    setup_distributed,
)
from exact_ct.training.trainer import BEST, LAST, Interrupted, LoopOptions, Trainer

__all__ = ["BEST", "LAST", "ExactTrainer", "Interrupted", "finish_distributed", "step_losses", "train"]

log = logging.getLogger(__name__)


def step_losses(
    model: torch.nn.Module,
    pool: OrganConfinedMILPool,
    organ_loss: OrganLoss,
    batch: dict[str, Any],
    profile: TrainProfile,
    pos_weight: torch.Tensor,
    device: torch.device,
    amp: str,
    use_pseudo: bool,
    w_org: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward pass and losses of one batch: (total, MIL BCE at both scales, organ Dice+CE)."""
    image = batch[IMAGE_KEY].to(device, non_blocking=True)
    organs = batch[ORGANS_KEY].to(device, non_blocking=True).long()
    targets, mask = apply_uncertain_policy(
        batch[LABELS_KEY], batch[UNCERTAIN_KEY], profile.loss.uncertain, profile.loss.soft_target
    )
    targets, mask = targets.to(device), mask.to(device)
    with autocast(device, amp):
        out = model(image)
    organ_probs = out.organ_logits.float().softmax(1)
    if use_pseudo:  # early training: confine with the pseudo masks, the predicted organs are still noise
        region = F.one_hot(organs[:, 0], NUM_ORGAN_CLASSES).permute(0, 4, 1, 2, 3).float()
    else:
        region = organ_probs.detach() if profile.pooling.detach_organs else organ_probs
    p_full = pool(pool.pool_input(out.anomaly_logits_full), region, profile.pooling.k_full)
    p_half = pool(pool.pool_input(out.anomaly_logits_half), region, profile.pooling.k_half)
    w_half = profile.loss.half_scale_weight
    l_cls = weighted_bce(p_full, targets, mask, pos_weight) + w_half * weighted_bce(
        p_half, targets, mask, pos_weight
    )
    if profile.loss.average_scales:
        l_cls = l_cls / (1.0 + w_half)
    l_org = organ_loss(out.organ_logits, organs, out.organ_logits_deep)
    return l_cls + w_org * l_org, l_cls, l_org


@torch.no_grad()
def evaluate_split(
    net: ExactNet, pool: OrganConfinedMILPool, ds: StudyDataset, k: int, device: torch.device, amp: str
) -> dict[str, Any]:
    """Pooled probabilities (k = k_test, predicted organs) and organ Dice against pseudo masks."""
    net.eval()
    probs = np.zeros((len(ds), len(ABNORMALITIES)), dtype=np.float64)
    dices: list[float] = []
    for i in range(len(ds)):
        item = ds[i]
        with autocast(device, amp):
            pred = predict(net, pool, item[IMAGE_KEY][None].to(device), k)
        probs[i] = pred.probs[0].float().cpu().numpy()
        organs = pred.organ_probs[0].argmax(0).cpu().numpy()
        d = M.dice_per_label(organs, item[ORGANS_KEY][0].numpy(), range(1, NUM_ORGAN_CLASSES))
        vals = [v for v in d.values() if v is not None]
        dices.append(float(np.mean(vals)) if vals else float("nan"))
    valid = ds.uncertain < 0.5
    auroc = M.auroc_per_abnormality(ds.labels, probs, valid)
    return {
        "probs": probs,
        "auroc": auroc,
        "macro_auroc": M.macro(auroc),
        "organ_dice_pseudo": float(np.nanmean(dices)) if dices else float("nan"),
    }


def _plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """PNG curves beside dvclive's (``dvc plots show`` HTML needs a CDN; a PNG does not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> list[float]:
        return [float("nan") if h.get(key) is None else float(h[key]) for h in history]

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ep = [h["epoch"] for h in history]
    ax[0].plot(ep, series("train/loss"), label="loss")
    ax[0].plot(ep, series("train/loss_cls"), label="MIL BCE")
    ax[0].plot(ep, series("train/loss_organ"), label="organ Dice+CE")
    ax[0].set_xlabel("epoch")
    ax[0].legend()
    ax[1].plot(ep, series("val/macro_auroc"), label="val macro AUROC")
    ax[1].plot(ep, series("val/organ_dice_pseudo"), label="val organ Dice (pseudo)")
    ax[1].set_ylim(0, 1)
    ax[1].set_xlabel("epoch")
    ax[1].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, metadata={"Software": None})
    plt.close(fig)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


class ExactTrainer(Trainer):
    """The train stage's run: datasets of ``build_dataset``, ExactNet, AdamW with warm-up + cosine decay,
    per-epoch validation (the weights that will be published: the average with ``select: ema``), and the
    model package with Youden thresholds chosen on validation.

    Args:
        cfg: the ``train`` section (its active profile is used).
        dataset_dir: ``build_dataset`` output (index.csv, plan, cache).
        out_dir: the model package folder.
        reports_dir: dvclive curves, ``final_metrics.json``, ``curves.png``.
        checkpoints_dir: ``last.pt`` (resume) and ``best.pt``.
        seed: seed of the weights, the data order and the augmentation.
        params_used: the parameters recorded in the package.
        stop_after_steps: test hook (:class:`~exact_ct.training.trainer.LoopOptions`).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        dataset_dir: Path,
        out_dir: Path,
        reports_dir: Path,
        checkpoints_dir: Path,
        *,
        seed: int,
        params_used: dict[str, Any] | None = None,
        stop_after_steps: int | None = None,
    ) -> None:
        profile = cfg.active()
        # torchrun's processes on one machine share its cores: each takes its share of `threads`
        world = int(os.environ.get("WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, profile.threads // world))
        seed_everything(seed, profile.deterministic)
        device = choose_device(profile.device)
        dist_info = setup_distributed(device)

        index = load_index(dataset_dir)
        self.plan = load_plan(dataset_dir)
        self.data_version = json.loads((Path(dataset_dir) / "dataset.json").read_text()).get(
            "data_version", ""
        )
        train_rows, val_rows = index[index["split"] == "train"], index[index["split"] == "val"]
        if len(train_rows) == 0:
            raise ValueError(
                f"{dataset_dir}/index.csv: the train split is empty; add batches or change build_dataset.split"
            )
        if len(val_rows) == 0:
            log.warning("val split is empty: validating on the train split (metrics will be optimistic)")
            val_rows = train_rows
        cache = profile.cache_in_memory
        self.train_ds = StudyDataset(
            train_rows, dataset_dir, self.plan, profile.augment, seed=seed, cache_in_memory=cache
        )
        self.val_ds = StudyDataset(val_rows, dataset_dir, self.plan, None, seed=seed, cache_in_memory=cache)

        torch.manual_seed(seed)  # weight init does not depend on anything done before
        net = ExactNet(profile.network, in_channels=self.plan.in_channels).to(device)
        # validation runs on the weights that will be published (the moving average with select: ema)
        self.eval_net = (
            ExactNet(profile.network, in_channels=self.plan.in_channels).to(device)
            if profile.select == "ema"
            else net
        )
        self.pool = make_pool(profile.pooling, self.plan.spacing_xyz_mm).to(device)
        self.organ_loss = OrganLoss()
        labels = self.train_ds.labels
        valid = (
            self.train_ds.uncertain < 0.5 if profile.loss.uncertain == "mask" else np.ones_like(labels, bool)
        )
        self.pos_weight = torch.tensor(
            pos_weight_from_labels(labels, valid, profile.loss.max_pos_weight),
            dtype=torch.float32,
            device=device,
        )
        steps_per_epoch = math.ceil(math.ceil(len(self.train_ds) / dist_info.world) / profile.batch_size)
        optimizer = torch.optim.AdamW(net.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(profile.warmup_steps, steps_per_epoch * profile.epochs)
        )
        options = LoopOptions(
            epochs=profile.epochs,
            grad_clip=profile.grad_clip,
            amp=profile.amp,
            ema_decay=profile.ema_decay if profile.select == "ema" else None,
            checkpoint_every_steps=profile.checkpoint_every_steps,
            stop_after_steps=stop_after_steps,
        )
        super().__init__(
            net,
            optimizer,
            options,
            device=device,
            scheduler=scheduler,
            dist=dist_info,
            checkpoints_dir=checkpoints_dir,
            config_hash=config_hash(profile, seed, self.data_version, dist_info.world),
            reports_dir=reports_dir,
        )
        self.exact_net = net  # self.net typed as the Trainer's Module
        self.cfg, self.profile, self.seed = cfg, profile, seed
        self.out_dir, self.params_used = Path(out_dir), params_used or {}
        self.w_org = self.p_pseudo = 0.0

    def epoch_batches(self, epoch: int, skip: int) -> DataLoader:
        self.train_ds.set_epoch(epoch)
        sampler = EpochSampler(
            len(self.train_ds),
            self.seed,
            epoch,
            rank=self.dist.rank,
            world=self.dist.world,
            skip=skip * self.profile.batch_size,
        )
        return DataLoader(
            self.train_ds,
            batch_size=self.profile.batch_size,
            sampler=sampler,
            num_workers=self.profile.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def on_epoch_start(self, epoch: int) -> None:
        self.w_org = organ_loss_weight(self.profile.loss, epoch)
        self.p_pseudo = pseudo_mask_probability(
            self.profile.pseudo_mask_start, self.profile.pseudo_mask_epochs, epoch
        )

    def train_step(self, batch: dict[str, Any], epoch: int, step: int) -> dict[str, torch.Tensor]:
        use_pseudo = bool(np.random.default_rng([self.seed, epoch, step]).random() < self.p_pseudo)
        loss, l_cls, l_org = step_losses(
            self.model,
            self.pool,
            self.organ_loss,
            batch,
            self.profile,
            self.pos_weight,
            self.device,
            self.amp,
            use_pseudo,
            self.w_org,
        )
        return {"loss": loss, "loss_cls": l_cls, "loss_organ": l_org}

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        record["train/organ_weight"] = self.w_org
        record["train/pseudo_mask_probability"] = self.p_pseudo
        assert self.scheduler is not None
        record["train/lr"] = self.scheduler.get_last_lr()[0]
        if not self.dist.main:
            return
        if self.ema is not None:  # validate the weights that will be published
            self.eval_net.load_state_dict(self.ema)
        ev = evaluate_split(
            self.eval_net, self.pool, self.val_ds, self.profile.pooling.k_test, self.device, self.amp
        )
        record["val/macro_auroc"] = ev["macro_auroc"]
        record["val/organ_dice_pseudo"] = ev["organ_dice_pseudo"]
        for name, v in ev["auroc"].items():
            record[f"val/auroc/{name.lower().replace(' ', '_')}"] = v
        self.keep_if_best(ev["macro_auroc"], epoch, self.eval_net)
        log.info(
            "epoch %d: loss %.4f, val macro AUROC %s, organ Dice (pseudo) %s",
            epoch,
            record["train/loss"],
            _fmt(ev["macro_auroc"], ".4f"),
            _fmt(ev["organ_dice_pseudo"], ".3f"),
        )

    def on_train_end(self) -> dict[str, Any]:
        if not self.dist.main:
            return {}
        self.select_weights(self.profile.select)
        return self.package()

    def package(self) -> dict[str, Any]:
        """Selected weights (already in ``net``) -> thresholds on validation -> model package and metrics."""
        profile, val_ds = self.profile, self.val_ds
        ev = evaluate_split(self.exact_net, self.pool, val_ds, profile.pooling.k_test, self.device, self.amp)
        valid = val_ds.uncertain < 0.5
        thresholds = M.choose_thresholds(val_ds.labels, ev["probs"], valid=valid)
        f1 = M.f1_at(val_ds.labels, ev["probs"], thresholds, valid)
        metrics = {
            "selected": profile.select,
            "best_epoch": int(self.state.best_epoch),
            "epochs": int(profile.epochs),
            "val_macro_auroc": ev["macro_auroc"],
            "val_auroc": ev["auroc"],
            "val_f1_at_threshold": f1,
            "val_organ_dice_pseudo": ev["organ_dice_pseudo"],
            "val_studies": len(val_ds),
            "config_hash": self.config_hash,
        }
        pkg = ModelPackage(
            net=self.exact_net,
            network=profile.network,
            pooling=profile.pooling,
            plan=self.plan,
            version=self.cfg.version,
            data_version=self.data_version,
            thresholds=thresholds,
            metrics=M.nan_to_none(metrics),
            params=self.params_used,
        )
        save_package(pkg, self.out_dir)
        assert self.reports_dir is not None
        write_json_atomic(
            self.reports_dir / "final_metrics.json",
            M.nan_to_none({k: v for k, v in metrics.items() if k != "config_hash"}),
        )
        _plot_history(self.state.history, self.reports_dir / "curves.png")
        return M.nan_to_none(metrics)


def train(
    cfg: TrainConfig,
    dataset_dir: Path,
    out_dir: Path,
    reports_dir: Path,
    checkpoints_dir: Path,
    *,
    seed: int,
    params_used: dict[str, Any] | None = None,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train (or resume), then write the model package from the selected weights (``select``: last step,
    weight average, or best validation epoch). Returns the final metrics ({} on ranks other than 0).

    Args:
        stop_after_steps: test hook: raise :class:`Interrupted` right after the checkpoint written at that
            global step, as if the process had been killed there.
    """
    trainer = ExactTrainer(
        cfg,
        dataset_dir,
        out_dir,
        reports_dir,
        checkpoints_dir,
        seed=seed,
        params_used=params_used,
        stop_after_steps=stop_after_steps,
    )
    return trainer.run()
