"""The resumable training loop: MIL + organ losses, validation AUROC, best checkpoint, model package.

Resume contract (what a rerun after ``kill -9`` restores from ``<checkpoints>/last.pt``): model weights,
optimizer state (AdamW moments), LR scheduler state, GradScaler state, epoch, batches done in that
epoch, global step, best validation macro AUROC and its epoch, the per-epoch metric history (replayed into
dvclive so curves stay complete), and the torch / numpy / python RNG states. Data order and augmentation
are functions of (seed, epoch, index), so the rerun sees exactly the batches the killed run would have
seen next. A checkpoint whose config hash (profile + data version + seed) differs is ignored: training
restarts from scratch rather than mixing two experiments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from exact_ct.dataset.build import load_index, load_plan
from exact_ct.io import atomic_path, write_bytes_atomic, write_json_atomic
from exact_ct.logs import progress
from exact_ct.model.losses import (
    OrganLoss,
    apply_uncertain_policy,
    organ_loss_weight,
    pos_weight_from_labels,
    pseudo_mask_probability,
    weighted_bce,
)
from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage, make_pool, save_package, torch_bytes
from exact_ct.model.pooling import OrganConfinedMILPool
from exact_ct.model.predict import predict
from exact_ct.schema import ABNORMALITIES, NUM_ORGAN_CLASSES
from exact_ct.training import metrics as M
from exact_ct.training.config import TrainConfig, TrainProfile
from exact_ct.training.data import (
    IMAGE,
    LABELS,
    ORGANS,
    UNCERTAIN,
    EpochSampler,
    StudyDataset,
    collate,
)

log = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"


class Interrupted(RuntimeError):
    """Raised by the test hook ``stop_after_steps`` to simulate a kill right after a checkpoint."""


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistInfo:
    """Initialise torch.distributed when launched by ``torchrun`` (WORLD_SIZE > 1), else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if device.type == "cuda":  # each rank owns one GPU before NCCL starts (else all share cuda:0)
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(
        rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )


def finish_distributed() -> None:
    """Tear down the process group ``setup_distributed`` started (torchrun runs), if any."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(profile: TrainProfile) -> torch.device:
    if profile.device == "cpu" or (profile.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            "train profile asks for device=cuda but CUDA is not available; use the cpu-demo profile"
        )
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:  # fixed input size: let cuDNN pick the fastest convolution algorithms once
        torch.backends.cudnn.benchmark = True


def config_hash(profile: TrainProfile, seed: int, data_version: str) -> str:
    blob = json.dumps(
        {"profile": dataclasses.asdict(profile), "seed": seed, "data": data_version},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to 5 % of the peak."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t))

    return f


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], net: torch.nn.Module, decay: float, step: int) -> None:
    """One step of the exponential moving average of the weights. The decay ramps up as
    ``(1 + step) / (10 + step)`` to ``decay``, so the first steps do not anchor it to the initial weights."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for key, value in net.state_dict().items():
        if value.is_floating_point():
            ema[key].mul_(d).add_(value.detach(), alpha=1.0 - d)
        else:
            ema[key].copy_(value)


def _save_atomic(obj: Any, path: Path) -> None:
    write_bytes_atomic(path, torch_bytes(obj))


def _rng_state() -> dict[str, Any]:
    """The three generators' states as tensors and plain values only, so that a checkpoint loads with
    ``torch.load(weights_only=True)`` (numpy's key array would need unpickling numpy globals)."""
    np_state = np.random.get_state(legacy=False)
    np_plain = {
        "bit_generator": str(np_state["bit_generator"]),
        "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
        "pos": int(np_state["state"]["pos"]),
        "has_gauss": int(np_state["has_gauss"]),
        "gauss": float(np_state["gauss"]),
    }
    return {"torch": torch.get_rng_state(), "numpy": np_plain, "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    s = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": s["bit_generator"],
            "state": {"key": s["key"].numpy().astype(np.uint32), "pos": s["pos"]},
            "has_gauss": s["has_gauss"],
            "gauss": s["gauss"],
        }
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A training checkpoint, loaded weights-only: tensors and plain containers, never pickled code.

    A checkpoint holding anything else (tampered, or written before checkpoints were weights-only)
    is refused with an error naming the file instead of being unpickled.
    """
    import pickle

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise RuntimeError(
            f"{path}: refused: not a weights-only checkpoint (it holds pickled objects other than tensors "
            f"and plain values: tampered, or written by an older version). Delete it to train from scratch. "
            f"({str(e).splitlines()[0][:200]})"
        ) from None


def _autocast(device: torch.device, amp: str) -> Any:
    if device.type != "cuda" or amp == "none":
        return torch.autocast(device_type="cpu", enabled=False)
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


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
    image = batch[IMAGE].to(device, non_blocking=True)
    organs = batch[ORGANS].to(device, non_blocking=True).long()
    targets, mask = apply_uncertain_policy(
        batch[LABELS], batch[UNCERTAIN], profile.loss.uncertain, profile.loss.soft_target
    )
    targets, mask = targets.to(device), mask.to(device)
    with _autocast(device, amp):
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
    net: torch.nn.Module, pool: OrganConfinedMILPool, ds: StudyDataset, k: int, device: torch.device, amp: str
) -> dict[str, Any]:
    """Pooled probabilities (k = k_test, predicted organs) and organ Dice against pseudo masks."""
    net.eval()
    probs = np.zeros((len(ds), len(ABNORMALITIES)), dtype=np.float64)
    dices: list[float] = []
    for i in range(len(ds)):
        item = ds[i]
        with _autocast(device, amp):
            pred = predict(net, pool, item[IMAGE][None].to(device), k)
        probs[i] = pred.probs[0].float().cpu().numpy()
        organs = pred.organ_probs[0].argmax(0).cpu().numpy()
        d = M.dice_per_label(organs, item[ORGANS][0].numpy(), range(1, NUM_ORGAN_CLASSES))
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


def _live_log(live: Any, record: dict[str, Any]) -> None:
    for key, value in sorted(record.items()):
        if key == "epoch" or value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        live.log_metric(key, float(value))
    live.next_step()


def _plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """PNG curves beside dvclive's (``dvc plots show`` HTML needs a CDN; a PNG does not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ep = [h["epoch"] for h in history]
    ax[0].plot(ep, [h["train/loss"] for h in history], label="loss")
    ax[0].plot(ep, [h["train/loss_cls"] for h in history], label="MIL BCE")
    ax[0].plot(ep, [h["train/loss_organ"] for h in history], label="organ Dice+CE")
    ax[0].set_xlabel("epoch")
    ax[0].legend()
    ax[1].plot(ep, [h.get("val/macro_auroc", float("nan")) for h in history], label="val macro AUROC")
    ax[1].plot(
        ep, [h.get("val/organ_dice_pseudo", float("nan")) for h in history], label="val organ Dice (pseudo)"
    )
    ax[1].set_ylim(0, 1)
    ax[1].set_xlabel("epoch")
    ax[1].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, metadata={"Software": None})
    plt.close(fig)


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
    weight average, or best validation epoch). Returns the final metrics.

    Args:
        stop_after_steps: test hook: raise :class:`Interrupted` right after the checkpoint written at that
            global step, as if the process had been killed there.
    """
    profile = cfg.active()
    torch.set_num_threads(max(1, profile.threads))
    seed_everything(seed, profile.deterministic)
    device = pick_device(profile)
    dist_info = setup_distributed(device)
    amp = profile.amp if device.type == "cuda" else "none"

    index = load_index(dataset_dir)
    plan = load_plan(dataset_dir)
    data_version = json.loads((Path(dataset_dir) / "dataset.json").read_text()).get("data_version", "")
    train_rows, val_rows = index[index["split"] == "train"], index[index["split"] == "val"]
    if len(train_rows) == 0:
        raise ValueError(
            f"{dataset_dir}/index.csv: the train split is empty; add batches or change build_dataset.split"
        )
    if len(val_rows) == 0:
        log.warning("val split is empty: validating on the train split (metrics will be optimistic)")
        val_rows = train_rows
    train_ds = StudyDataset(
        train_rows, dataset_dir, plan, profile.augment, seed=seed, cache_in_memory=profile.cache_in_memory
    )
    val_ds = StudyDataset(
        val_rows, dataset_dir, plan, None, seed=seed, cache_in_memory=profile.cache_in_memory
    )

    torch.manual_seed(seed)  # weight init does not depend on anything done before
    net = ExactNet(profile.network, in_channels=plan.in_channels).to(device)
    # validation runs on the weights that will be published (the moving average with select: ema)
    eval_net = (
        ExactNet(profile.network, in_channels=plan.in_channels).to(device) if profile.select == "ema" else net
    )
    model: torch.nn.Module = net
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            net, device_ids=[dist_info.local_rank] if device.type == "cuda" else None
        )
    pool = make_pool(profile.pooling, plan.spacing_xyz_mm).to(device)
    organ_loss = OrganLoss()
    valid_train = (
        train_ds.uncertain < 0.5 if profile.loss.uncertain == "mask" else np.ones_like(train_ds.labels, bool)
    )
    pos_weight = torch.tensor(
        pos_weight_from_labels(train_ds.labels, valid_train, profile.loss.max_pos_weight),
        dtype=torch.float32,
        device=device,
    )

    steps_per_epoch = math.ceil(math.ceil(len(train_ds) / dist_info.world) / profile.batch_size)
    total_steps = steps_per_epoch * profile.epochs
    optimizer = torch.optim.AdamW(net.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(profile.warmup_steps, total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16"))

    chash = config_hash(profile, seed, data_version)
    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "global_step": 0,
        "best": -1.0,
        "best_epoch": -1,
        "history": [],
        "sums": None,
    }
    # The weight average (select: ema) lives beside the weights and is checkpointed with them.
    ema: dict[str, torch.Tensor] | None = (
        {k: v.detach().clone() for k, v in net.state_dict().items()} if profile.select == "ema" else None
    )
    last = checkpoints_dir / LAST
    if last.is_file():
        ckpt = load_checkpoint(last, device)
        if ckpt.get("config_hash") == chash:
            net.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            _set_rng_state(ckpt["rng"])
            if ema is not None:
                ema = {k: v.to(device) for k, v in ckpt["ema"].items()}
            state = {k: ckpt[k] for k in state}
            log.info("resuming from %s: epoch %d, step %d", last, state["epoch"], state["step"])
        else:
            log.warning("%s belongs to another configuration (hash differs); starting from scratch", last)

    def checkpoint() -> None:
        if not dist_info.main:
            return
        _save_atomic(
            {
                "config_hash": chash,
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                **({"ema": ema} if ema is not None else {}),
                **state,
            },
            last,
        )

    live = None
    if dist_info.main:
        from dvclive import Live

        reports_dir.mkdir(parents=True, exist_ok=True)
        live = Live(dir=str(reports_dir), resume=False, save_dvc_exp=False, dvcyaml=None, report=None)
        for record in state["history"]:  # a resumed run rewrites the complete curves
            _live_log(live, record)
        checkpoints_dir.mkdir(parents=True, exist_ok=True)

    for epoch in range(state["epoch"], profile.epochs):
        train_ds.set_epoch(epoch)
        done = state["step"] if epoch == state["epoch"] else 0
        sampler = EpochSampler(
            len(train_ds),
            seed,
            epoch,
            rank=dist_info.rank,
            world=dist_info.world,
            skip=done * profile.batch_size,
        )
        loader = DataLoader(
            train_ds,
            batch_size=profile.batch_size,
            sampler=sampler,
            num_workers=profile.workers,
            collate_fn=collate,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        w_org = organ_loss_weight(profile.loss, epoch)
        p_pseudo = pseudo_mask_probability(profile.pseudo_mask_start, profile.pseudo_mask_epochs, epoch)
        sums = state.get("sums") or {"loss": 0.0, "loss_cls": 0.0, "loss_organ": 0.0, "n": 0}
        model.train()
        bar = progress(  # a terminal bar on the main rank only
            loader,
            f"epoch {epoch + 1}/{profile.epochs}",
            enabled=dist_info.main,
            initial=done,
            total=done + len(loader),
            unit="step",
        )
        for step, batch in enumerate(bar, start=done):
            use_pseudo = np.random.default_rng([seed, epoch, step]).random() < p_pseudo
            loss, l_cls, l_org = step_losses(
                model, pool, organ_loss, batch, profile, pos_weight, device, amp, use_pseudo, w_org
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if profile.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(net.parameters(), profile.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                update_ema(ema, net, profile.ema_decay, state["global_step"])
            sums = {
                "loss": sums["loss"] + loss.item(),
                "loss_cls": sums["loss_cls"] + l_cls.item(),
                "loss_organ": sums["loss_organ"] + l_org.item(),
                "n": sums["n"] + 1,
            }
            state.update(step=step + 1, global_step=state["global_step"] + 1, sums=sums)
            if (
                profile.checkpoint_every_steps > 0
                and state["global_step"] % profile.checkpoint_every_steps == 0
            ):
                checkpoint()
            if stop_after_steps is not None and state["global_step"] >= stop_after_steps:
                checkpoint()
                raise Interrupted(f"stopped after global step {state['global_step']}")

        record: dict[str, Any] = {
            "epoch": epoch,
            "train/loss": sums["loss"] / max(1, sums["n"]),
            "train/loss_cls": sums["loss_cls"] / max(1, sums["n"]),
            "train/loss_organ": sums["loss_organ"] / max(1, sums["n"]),
            "train/organ_weight": w_org,
            "train/pseudo_mask_probability": p_pseudo,
            "train/lr": scheduler.get_last_lr()[0],
        }
        if dist_info.main:
            if ema is not None:  # validate the weights that will be published
                eval_net.load_state_dict(ema)
            ev = evaluate_split(eval_net, pool, val_ds, profile.pooling.k_test, device, amp)
            record["val/macro_auroc"] = ev["macro_auroc"]
            record["val/organ_dice_pseudo"] = ev["organ_dice_pseudo"]
            for name, v in ev["auroc"].items():
                record[f"val/auroc/{name.lower().replace(' ', '_')}"] = v
            if not math.isnan(ev["macro_auroc"]) and ev["macro_auroc"] > state["best"]:
                state["best"], state["best_epoch"] = ev["macro_auroc"], epoch
                _save_atomic(
                    {"model": eval_net.state_dict(), "epoch": epoch, "config_hash": chash},
                    checkpoints_dir / BEST,
                )
            log.info(
                "epoch %d: loss %.4f, val macro AUROC %.4f, organ Dice (pseudo) %.3f",
                epoch,
                record["train/loss"],
                ev["macro_auroc"],
                ev["organ_dice_pseudo"],
            )
            _live_log(live, record)
        state["history"] = [*state["history"], record]
        state.update(epoch=epoch + 1, step=0, sums=None)
        checkpoint()
        if dist_info.world > 1:
            import torch.distributed as dist

            dist.barrier()

    if not dist_info.main:
        return {}
    # The published weights: the last step's, their moving average, or the best validation epoch's.
    if profile.select == "ema" and ema is not None:
        net.load_state_dict(ema)
    elif profile.select == "best_val" and (checkpoints_dir / BEST).is_file():
        net.load_state_dict(load_checkpoint(checkpoints_dir / BEST, device)["model"])
    return _finish(
        cfg,
        profile,
        net,
        pool,
        val_ds,
        plan,
        state,
        chash,
        data_version,
        out_dir,
        reports_dir,
        checkpoints_dir,
        device,
        amp,
        params_used,
        live,
    )


def _no_nan(obj: Any) -> Any:
    """NaN (undefined metric, e.g. AUROC without positives) -> None, so the JSON stays standard."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _finish(
    cfg: TrainConfig,
    profile: TrainProfile,
    net: ExactNet,
    pool: OrganConfinedMILPool,
    val_ds: StudyDataset,
    plan: Any,
    state: dict[str, Any],
    chash: str,
    data_version: str,
    out_dir: Path,
    reports_dir: Path,
    checkpoints_dir: Path,
    device: torch.device,
    amp: str,
    params_used: dict[str, Any] | None,
    live: Any,
) -> dict[str, Any]:
    """Selected weights (already in ``net``) -> thresholds on validation -> model package and metrics."""
    ev = evaluate_split(net, pool, val_ds, profile.pooling.k_test, device, amp)
    valid = val_ds.uncertain < 0.5
    thresholds = M.youden_thresholds(val_ds.labels, ev["probs"], valid)
    f1 = M.f1_at(val_ds.labels, ev["probs"], thresholds, valid)
    metrics = {
        "selected": profile.select,
        "best_epoch": int(state["best_epoch"]),
        "epochs": int(profile.epochs),
        "val_macro_auroc": ev["macro_auroc"],
        "val_auroc": ev["auroc"],
        "val_f1_at_threshold": f1,
        "val_organ_dice_pseudo": ev["organ_dice_pseudo"],
        "val_studies": len(val_ds),
        "config_hash": chash,
    }
    pkg = ModelPackage(
        net=net,
        network=profile.network,
        pooling=profile.pooling,
        plan=plan,
        version=cfg.version,
        data_version=data_version,
        thresholds=thresholds,
        metrics=_no_nan(metrics),
        params=params_used or {},
    )
    save_package(pkg, out_dir)
    write_json_atomic(
        reports_dir / "final_metrics.json", _no_nan({k: v for k, v in metrics.items() if k != "config_hash"})
    )
    _plot_history(state["history"], reports_dir / "curves.png")
    if live is not None:
        live.end()
    return _no_nan(metrics)
