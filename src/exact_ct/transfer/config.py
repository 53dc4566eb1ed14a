"""Typed configuration of fine-tuning (params.yaml `finetune`: shared defaults plus one entry per task)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exact_ct.config import ConfigError, from_dict

TASK_KINDS = ("segmentation", "classify")
INITS = ("pretrained", "scratch")
METHODS = ("finetune", "probe")
TRUNK_PARTS = ("encoder", "organ_decoder", "anomaly_decoder")  # as exact_ct.transfer.model.TRUNK_PARTS


@dataclass(frozen=True)
class FinetuneConfig:
    """How one downstream task is learnt.

    Attributes:
        init: ``pretrained`` copies every weight of the package's network (encoder, organ decoder,
            anomaly decoder) into the new network; ``scratch`` starts from a random initialisation of
            the same network (the baseline).
        pretrained_parts: the trunk parts ``init=pretrained`` copies (``encoder``, ``organ_decoder``,
            ``anomaly_decoder``); the others start from the seeded random initialisation.
        maps_input: feed the frozen pretrained model's 18 anomaly maps to the new head as extra input
            channels (beside the anomaly decoder's features).
        freeze_encoder: keep the shared encoder's weights fixed (decoders and head still learn).
        method: classification only: ``finetune`` (new anomaly map + organ-confined top-k pooling,
            trained end to end) or ``probe`` (logistic regression on frozen per-organ embeddings).
        epochs: passes over the training studies.
        batch_size: studies per step.
        lr: AdamW learning rate of the new head (constant; the few-label regime has few steps).
        trunk_lr_scale: the trunk's (encoder and decoders) learning rate is ``lr * trunk_lr_scale``, for
            ``pretrained`` and ``scratch`` alike (discriminative fine-tuning: a pretrained trunk needs
            smaller steps than a new head).
        encoder_lr_scale: the shared encoder's learning rate is the trunk's times this (the decoders
            keep the trunk's): a pretrained encoder kept close to its features while fresh decoders
            learn at full speed; 0 freezes it, as ``freeze_encoder``.
        head_warmup_epochs: the first epochs train the new head only (trunk frozen), then everything
            learns (the trunk is not rewritten by the gradients of a random head).
        weight_decay: AdamW weight decay.
        val_fraction: share of the labelled studies held out for the reported metrics (at least one
            study when there are two or more); the package keeps the weights of the last epoch.
        threshold: probability above which a voxel (segmentation) or study (classify) is positive.
        region: classification: organ ids the new map is confined to (empty: the whole volume); the
            organs are those the pretrained package predicts, for every ``init`` (a data-side input,
            like the pseudo masks in pretraining).
        k_train: top-k voxels pooled into the study probability during training.
        k_test: top-k voxels pooled at validation and inference.
        probe_c: inverse L2 strength of the linear probe (scikit-learn ``C``).
        seed: seed of the weight initialisation, the split and the data order.
        threads: torch CPU threads.
    """

    init: str = "pretrained"
    pretrained_parts: tuple[str, ...] = ("encoder", "organ_decoder", "anomaly_decoder")
    maps_input: bool = True
    freeze_encoder: bool = False
    method: str = "finetune"
    epochs: int = 20
    batch_size: int = 2
    lr: float = 1e-3
    trunk_lr_scale: float = 1.0
    encoder_lr_scale: float = 1.0
    head_warmup_epochs: int = 0
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    threshold: float = 0.5
    region: tuple[int, ...] = ()
    k_train: int = 48
    k_test: int = 3
    probe_c: float = 1.0
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"finetune.init {self.init!r} unknown; expected one of {INITS}")
        bad = sorted(set(self.pretrained_parts) - set(TRUNK_PARTS))
        if bad:
            raise ConfigError(f"finetune.pretrained_parts {bad} unknown; expected some of {TRUNK_PARTS}")
        if self.method not in METHODS:
            raise ConfigError(f"finetune.method {self.method!r} unknown; expected one of {METHODS}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("finetune.val_fraction must lie in [0, 1)")
        if self.trunk_lr_scale < 0 or self.encoder_lr_scale < 0 or self.head_warmup_epochs < 0:
            raise ConfigError(
                "finetune.trunk_lr_scale, finetune.encoder_lr_scale and finetune.head_warmup_epochs must be >= 0"
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("finetune.epochs and finetune.batch_size must be >= 1")


@dataclass(frozen=True)
class FinetuneTaskConfig:
    """One entry of ``finetune.tasks`` (what the DVC stage ``finetune@<task>`` learns).

    Attributes:
        kind: ``segmentation`` or ``classify``.
        target: segmentation: the abnormality whose synthetic lesion masks in the build_dataset cache are
            the labels (when the data is a build_dataset folder); classify: the label column.
        labels: classify: CSV with ``study_id`` and the ``target`` column; empty: the build_dataset
            index's ``truth:<target>`` column (synthetic truth) or its ``<target>`` column.
        max_studies: use at most this many labelled studies (the few-label regime); 0 = all.
        overrides: keys of :class:`FinetuneConfig` that differ from ``finetune.defaults`` for this task.
    """

    kind: str = "segmentation"
    target: str = ""
    labels: str = ""
    max_studies: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"finetune task kind {self.kind!r} unknown; expected one of {TASK_KINDS}")


@dataclass(frozen=True)
class FinetuneSectionConfig:
    """The whole params.yaml ``finetune`` section."""

    defaults: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, Any] = field(default_factory=dict)

    def task(self, name: str) -> tuple[FinetuneTaskConfig, FinetuneConfig]:
        if name not in self.tasks:
            raise ConfigError(f"finetune.tasks has no task {name!r}; tasks: {sorted(self.tasks)}")
        spec = from_dict(FinetuneTaskConfig, self.tasks[name], f"finetune.tasks.{name}")
        cfg = from_dict(FinetuneConfig, {**self.defaults, **spec.overrides}, f"finetune.tasks.{name}")
        return spec, cfg
