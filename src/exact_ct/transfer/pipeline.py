"""`exact finetune` as a library function: load labelled studies, fine-tune, evaluate, write a package.

Fine-tuned package layout (``OUT/``)::

    package.json    kind "exact-finetune", task (segmentation | classify), target, config, network,
                    preprocessing (the base model's GridPlan), threshold, metrics, base model version
    weights.pt      TransferNet state_dict (``method: finetune``)
    probe.json      standardisation + logistic-regression coefficients (``method: probe``)
    base/           the pretrained package it started from (save_package): the anomaly-map inputs, the
                    organs for region pooling and the probe's embeddings come from it, so OUT is
                    self-contained
    metrics.json    the validation metrics (also inside package.json)
    quarantine.csv  labelled studies left out, with rule and message
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exact_ct.model.package import jsonable
from exact_ct.transfer.config import FinetuneConfig
from exact_ct.transfer.data import Loaded

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "exact-finetune"
BASE = "base"


def load_task_data(
    kind: str,
    data: Path | None,
    plan: Any,
    *,
    labels: Path | None = None,
    column: str = "label",
    target: str = "",
) -> Loaded:
    """Labelled studies for ``kind`` from any supported source (exact_ct.transfer.data)."""
    from exact_ct.transfer import data as D

    if kind == "segmentation":
        if data is None:
            raise ValueError("segmentation needs --data DIR (images/ + labels/ or a build_dataset folder)")
        if D.is_build_dataset(data):
            if not target:
                raise ValueError(f"{data} is a build_dataset folder: name the abnormality with --target")
            return D.load_build_dataset_segmentation(data, plan, target)
        return D.load_segmentation_folder(data, plan)
    return D.load_classification(labels, target or column, plan, data)


def run_finetune(
    kind: str,
    model_dir: Path,
    out_dir: Path,
    cfg: FinetuneConfig,
    *,
    data: Path | None = None,
    labels: Path | None = None,
    column: str = "label",
    target: str = "",
    max_studies: int = 0,
    params_used: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune the package in ``model_dir`` on one task and write the fine-tuned package to ``out_dir``.

    Returns the metrics (also written to ``out_dir/metrics.json``).
    """
    from exact_ct.io import write_bytes_atomic, write_csv_atomic, write_json_atomic
    from exact_ct.model.package import load_package, save_package, torch_bytes
    from exact_ct.training.metrics import nan_to_none
    from exact_ct.transfer import probe as P
    from exact_ct.transfer import train as T
    from exact_ct.transfer.data import subsample

    torch.set_num_threads(max(1, cfg.threads))
    base = load_package(model_dir)
    loaded = load_task_data(kind, data, base.plan, labels=labels, column=column, target=target)
    samples = subsample(loaded.samples, max_studies, cfg.seed)
    log.info("finetune %s: %d labelled studies, %d quarantined", kind, len(samples), len(loaded.quarantine))
    prepared = T.prepare(samples, base)
    train_idx, val_idx = T.split_indices(len(prepared), cfg)
    eval_idx = val_idx if len(val_idx) else train_idx  # one study: metrics on it, flagged below
    metrics: dict[str, Any] = {
        "task": kind,
        "target": target or column,
        "method": cfg.method if kind == "classify" else "finetune",
        "init": cfg.init,
        "maps_input": cfg.maps_input,
        "freeze_encoder": cfg.freeze_encoder,
        "train_studies": len(train_idx),
        "val_studies": len(val_idx),
        "quarantined": len(loaded.quarantine),
        "metrics_on": "val" if len(val_idx) else "train",
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra_files: dict[str, Any] = {}
    n_extra = 0
    if kind == "classify" and cfg.method == "probe":
        assert prepared.labels is not None
        feats = P.probe_features(prepared.images, base)
        probe = P.fit_probe(feats[train_idx], prepared.labels[train_idx], cfg)
        p = P.apply_probe(probe, feats[eval_idx])
        metrics.update(T.classification_metrics(prepared.labels[eval_idx], p, cfg.threshold))
        extra_files["probe.json"] = probe
    else:
        net, losses = T.fit(kind, prepared, train_idx, cfg, base, base.network)
        n_extra = net.n_extra
        metrics["final_train_loss"] = losses[-1]
        if kind == "segmentation":
            assert prepared.masks is not None
            probs = T.predict_maps(net, prepared, eval_idx)
            metrics.update(T.segmentation_metrics(probs, prepared.masks[eval_idx, 0].numpy(), cfg.threshold))
        else:
            assert prepared.labels is not None
            p = T.classify_probs(net, prepared, eval_idx, cfg)
            metrics.update(T.classification_metrics(prepared.labels[eval_idx], p, cfg.threshold))
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        write_bytes_atomic(out_dir / "weights.pt", torch_bytes(state))
    metrics = nan_to_none(metrics)
    for name, obj in extra_files.items():
        write_json_atomic(out_dir / name, obj)
    save_package(base, out_dir / BASE)
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "task": kind,
        "target": target or column,
        "config": jsonable(dataclasses.asdict(cfg)),
        "network": jsonable(dataclasses.asdict(base.network)),
        "n_extra": n_extra,
        "preprocessing": base.plan.to_json(),
        "base": {"dir": BASE, "version": base.version, "data_version": base.data_version},
        "threshold": cfg.threshold,
        "metrics": metrics,
        "params": params_used or {},
    }
    write_json_atomic(out_dir / "package.json", manifest)
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_csv_atomic(out_dir / "quarantine.csv", loaded.quarantine_frame())
    return metrics


@dataclass
class FinetunedPackage:
    """A loaded fine-tuned package: the new head (or probe) and the base package it depends on."""

    manifest: dict[str, Any]
    cfg: FinetuneConfig
    base: Any
    net: Any = None
    probe: dict[str, Any] | None = None

    @property
    def task(self) -> str:
        return str(self.manifest["task"])


def load_finetuned(folder: str | os.PathLike[str]) -> FinetunedPackage:
    """Load a package written by :func:`run_finetune`."""
    from exact_ct.config import from_dict
    from exact_ct.model.config import NetworkConfig
    from exact_ct.model.package import load_package
    from exact_ct.transfer.model import TransferNet

    folder = Path(folder)
    path = folder / "package.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a fine-tuned package (no package.json)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("kind") != KIND or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not an {KIND} package of format {FORMAT_VERSION}")
    cfg = from_dict(FinetuneConfig, meta["config"], "config")
    base = load_package(folder / meta["base"]["dir"])
    pkg = FinetunedPackage(meta, cfg, base)
    if (folder / "probe.json").is_file():
        pkg.probe = json.loads((folder / "probe.json").read_text(encoding="utf-8"))
    else:
        network = from_dict(NetworkConfig, meta["network"], "network")
        net = TransferNet(network, int(meta["n_extra"]), in_channels=base.plan.in_channels)
        net.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
        pkg.net = net.eval()
    return pkg


def predict_study(pkg: FinetunedPackage, hu: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Apply a fine-tuned package to one canonical volume.

    Returns ``{"probability": p}`` (classify) or ``{"probability_map", "mask"}`` on the canonical grid
    (segmentation; uint8 mask at the package's threshold).
    """
    from exact_ct.dataset.grid import to_canonical
    from exact_ct.transfer import probe as P
    from exact_ct.transfer import train as T
    from exact_ct.transfer.data import Sample, image_on_grid

    image, g_aff = image_on_grid(hu, affine, pkg.base.plan)
    if pkg.probe is not None:
        feats = P.probe_features(torch.from_numpy(image)[None], pkg.base)
        return {"probability": float(P.apply_probe(pkg.probe, feats)[0])}
    data = T.prepare([Sample("study", image, label=0.0)], pkg.base)
    idx = np.array([0])
    if pkg.task == "classify":
        return {"probability": float(T.classify_probs(pkg.net, data, idx, pkg.cfg)[0])}
    prob = T.predict_maps(pkg.net, data, idx)[0]
    prob_c = to_canonical(prob, g_aff, affine, np.asarray(hu).shape, order=1, dtype=np.float32)
    return {"probability_map": prob_c, "mask": (prob_c >= pkg.cfg.threshold).astype(np.uint8)}
