"""Few-label training of a TransferNet: segmentation (Dice + BCE per voxel) or classification (BCE on
organ-confined top-k pooled probabilities); the linear probe is :mod:`exact_ct.transfer.probe`.

The fine-tune is a use of the shared training loop (:class:`FinetuneTrainer`, a
:class:`~exact_ct.training.trainer.Trainer`); :func:`fit` is its entry point.

Deterministic for a seed on CPU: weight init, epoch order and the train/validation split are functions of
``cfg.seed`` only. Inputs are arrays already on the model grid (:mod:`exact_ct.transfer.data`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from exact_ct.model.package import ModelPackage
from exact_ct.training.metrics import dice
from exact_ct.training.trainer import LoopOptions, Trainer
from exact_ct.transfer.config import FinetuneConfig
from exact_ct.transfer.data import Sample
from exact_ct.transfer.model import (
    TransferNet,
    build_net,
    freeze_encoder,
    pooled_probability,
    region_mask,
)

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Samples as tensors, with what the frozen pretrained model says about each (computed once).

    Attributes:
        images: (N, 1, X, Y, Z) float32.
        maps: (N, 18, X, Y, Z) float16 pretrained anomaly maps, or None without a base model.
        organs: (N, X, Y, Z) uint8 organs predicted by the base model, or None.
        masks: (N, 1, X, Y, Z) float32 segmentation targets, or None.
        labels: (N,) float32 classification targets, or None.
    """

    ids: list[str]
    images: torch.Tensor
    maps: torch.Tensor | None
    organs: np.ndarray | None
    masks: torch.Tensor | None
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)


@torch.no_grad()
def prepare(samples: list[Sample], base: ModelPackage | None, device: str = "cpu") -> Prepared:
    """Stack samples and run the frozen base model once per study (maps and organs)."""
    from exact_ct.model.inference import infer_grid

    if not samples:
        raise ValueError("no labelled studies left to fine-tune on (see quarantine.csv)")
    images = torch.from_numpy(np.stack([s.image for s in samples]).astype(np.float32))
    maps = organs = None
    if base is not None:
        res = [infer_grid(s.image, base, device) for s in samples]
        maps = torch.from_numpy(np.stack([r.maps for r in res]).astype(np.float16))
        organs = np.stack([r.organ_probs.argmax(0).astype(np.uint8) for r in res])
    masks = labels = None
    if samples[0].mask is not None:
        masks = torch.from_numpy(np.stack([np.asarray(s.mask) for s in samples]).astype(np.float32))[:, None]
    else:
        labels = np.array([s.label for s in samples], np.float32)
    return Prepared([s.study_id for s in samples], images, maps, organs, masks, labels)


def split_indices(n: int, cfg: FinetuneConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split; validation is empty when there is a single study."""
    order = np.random.default_rng([cfg.seed, 3]).permutation(n)
    n_val = 0 if n < 2 or cfg.val_fraction <= 0 else max(1, int(round(cfg.val_fraction * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _segmentation_loss() -> Any:
    from monai.losses import DiceCELoss

    # batch=True: Dice over the whole batch, so a study without lesion does not give a 0/0 Dice.
    return DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)


class FinetuneTrainer(Trainer):
    """Few-label training of a TransferNet on the shared loop: per-group constant learning rates (head,
    decoders, encoder), an optional head-only warm-up, no checkpoints (runs take minutes), one progress bar
    over the epochs. :meth:`run` returns ``(net, per-epoch mean losses)`` with the net in eval mode.

    Args:
        kind: ``segmentation`` (Dice + BCE per voxel) or ``classify`` (class-balanced BCE on the top-k
            pooled probability inside ``cfg.region`` of the base model's organs).
        data: the prepared studies; ``train_idx`` those trained on.
        cfg: the fine-tune configuration.
        base: the pretrained package (weights to copy, anomaly maps), or None for scratch without maps.
        network: the network configuration of the trunk.
    """

    def __init__(
        self,
        kind: str,
        data: Prepared,
        train_idx: np.ndarray,
        cfg: FinetuneConfig,
        base: ModelPackage | None,
        network: Any,
    ) -> None:
        torch.set_num_threads(max(1, cfg.threads))
        self.maps_input = cfg.maps_input and data.maps is not None
        if cfg.maps_input and data.maps is None:
            raise ValueError("finetune.maps_input needs the pretrained package's anomaly maps")
        net = build_net(
            network,
            base,
            pretrained=cfg.init == "pretrained",
            maps_input=self.maps_input,
            seed=cfg.seed,
            in_channels=int(data.images.shape[1]),
            parts=cfg.pretrained_parts,
        )
        if cfg.freeze_encoder or cfg.encoder_lr_scale == 0:
            # one way to keep the encoder fixed: no gradients into it at all (not merely no optimiser step)
            freeze_encoder(net)
        head = [p for p in net.head.parameters() if p.requires_grad]
        self.trunk = [p for p in net.trunk.parameters() if p.requires_grad]
        groups = [{"params": head, "lr": cfg.lr}]
        encoder = {id(p) for p in net.encoder.parameters()}
        for params, scale in (
            ([p for p in self.trunk if id(p) not in encoder], cfg.trunk_lr_scale),
            ([p for p in self.trunk if id(p) in encoder], cfg.trunk_lr_scale * cfg.encoder_lr_scale),
        ):
            if params and scale > 0:
                groups.append({"params": params, "lr": cfg.lr * scale})
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.seg_loss = _segmentation_loss() if kind == "segmentation" else None
        self.region: torch.Tensor | None = None
        self.pos_weight = 1.0
        if kind == "classify":
            if data.labels is None:
                raise ValueError("classification needs study labels")
            y = data.labels[train_idx]
            if len(set(y.tolist())) < 2:
                raise ValueError(
                    f"classification needs both classes among the training studies, got {set(y)}"
                )
            self.pos_weight = float((y == 0).sum() / max(1, (y == 1).sum()))
            organs = (
                data.organs
                if data.organs is not None
                else np.zeros(tuple(data.images.shape[:1]) + tuple(data.images.shape[2:]), np.uint8)
            )
            self.region = torch.from_numpy(region_mask(organs, cfg.region if data.organs is not None else ()))
        options = LoopOptions(epochs=cfg.epochs, progress="epoch", description=f"finetune {kind}")
        super().__init__(net, optimizer, options, device=torch.device("cpu"))
        self.transfer_net = net
        self.data, self.train_idx, self.cfg = data, train_idx, cfg

    def epoch_batches(self, epoch: int, skip: int) -> list[torch.Tensor]:
        order = self.train_idx[
            np.random.default_rng([self.cfg.seed, 5, epoch]).permutation(len(self.train_idx))
        ]
        bs = self.cfg.batch_size
        return [torch.from_numpy(order[start : start + bs]) for start in range(0, len(order), bs)][skip:]

    def on_epoch_start(self, epoch: int) -> None:
        # Head-only warm-up: the trunk takes no step (its gradients are not even computed).
        warm = epoch < self.cfg.head_warmup_epochs
        for p in self.trunk:
            p.requires_grad_(not warm and self.cfg.trunk_lr_scale > 0)

    def train_step(self, batch: torch.Tensor, epoch: int, step: int) -> dict[str, torch.Tensor]:
        data, b = self.data, batch
        extra = data.maps[b].float() if self.maps_input and data.maps is not None else None
        logits = self.model(data.images[b], extra)
        if self.seg_loss is not None:
            assert data.masks is not None
            return {"loss": self.seg_loss(logits, data.masks[b])}
        assert self.region is not None and data.labels is not None
        p = pooled_probability(logits, self.region[b], self.cfg.k_train).clamp(1e-6, 1 - 1e-6)
        t = torch.from_numpy(data.labels[b.numpy()])
        w = torch.where(t > 0.5, torch.full_like(t, self.pos_weight), torch.ones_like(t))
        return {"loss": F.binary_cross_entropy(p, t, weight=w)}

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        log.debug("finetune epoch %d: loss %.4f", epoch, record["train/loss"])

    def on_train_end(self) -> tuple[TransferNet, list[float]]:
        self.transfer_net.eval()
        return self.transfer_net, [float(r["train/loss"]) for r in self.state.history]


def fit(
    kind: str,
    data: Prepared,
    train_idx: np.ndarray,
    cfg: FinetuneConfig,
    base: ModelPackage | None,
    network: Any,
) -> tuple[TransferNet, list[float]]:
    """Build the network (pretrained or scratch, frozen encoder or not) and train it; returns (net, losses)."""
    net, losses = FinetuneTrainer(kind, data, train_idx, cfg, base, network).run()
    return net, losses


@torch.no_grad()
def predict_maps(net: TransferNet, data: Prepared, idx: np.ndarray) -> np.ndarray:
    """(n, X, Y, Z) float32 sigmoid lesion maps of the studies ``idx``."""
    out = []
    for i in idx:
        extra = data.maps[i : i + 1].float() if net.n_extra and data.maps is not None else None
        out.append(net(data.images[i : i + 1], extra).sigmoid()[0, 0].numpy())
    return np.stack(out) if out else np.zeros((0, *data.images.shape[2:]), np.float32)


def segmentation_metrics(probs: np.ndarray, masks: np.ndarray, threshold: float) -> dict[str, Any]:
    """Mean Dice over studies with a lesion (or a false-positive prediction) at ``threshold``."""
    per = [dice(p >= threshold, m > 0.5) for p, m in zip(probs, masks, strict=True)]
    defined = [d for d in per if d is not None]
    return {
        "dice": float(np.mean(defined)) if defined else None,
        "dice_per_study": per,
        "studies": len(per),
    }


@torch.no_grad()
def classify_probs(net: TransferNet, data: Prepared, idx: np.ndarray, cfg: FinetuneConfig) -> np.ndarray:
    maps = predict_maps(net, data, idx)
    organs = data.organs[idx] if data.organs is not None else np.zeros(maps.shape, np.uint8)
    region = torch.from_numpy(region_mask(organs, cfg.region if data.organs is not None else ()))
    logits = torch.logit(torch.from_numpy(maps)[:, None].clamp(1e-7, 1 - 1e-7))
    return pooled_probability(logits, region, cfg.k_test).numpy()


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, float)
    p = np.asarray(p, float)
    auroc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None
    acc = float(((p >= threshold) == (y > 0.5)).mean()) if len(y) else None
    return {"auroc": auroc, "accuracy": acc, "studies": len(y), "positives": int((y > 0.5).sum())}
