"""Model package: everything `exact infer` needs, in one folder (weights + package.json).

``models/<name>/weights.pt``: the network's ``state_dict`` (loaded with ``weights_only=True``: no pickled
code). ``models/<name>/package.json``: format version, model version, network and pooling config, the
schema (abnormalities, organ ids, organ regions), the preprocessing spec (GridPlan), the params used, the
data version, validation thresholds and metrics.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exact_ct.config import from_dict
from exact_ct.dataset.grid import GridPlan
from exact_ct.io import write_bytes_atomic, write_json_atomic
from exact_ct.model.config import NetworkConfig, PoolingConfig
from exact_ct.model.network import ExactNet
from exact_ct.model.pooling import OrganConfinedMILPool, confine, region_masks
from exact_ct.schema import ABNORMALITIES, ORGANS, confinement_regions

FORMAT_VERSION = 1
WEIGHTS = "weights.pt"
MANIFEST = "package.json"


@dataclass
class ModelPackage:
    """A loaded (or about to be saved) model package."""

    net: ExactNet
    network: NetworkConfig
    pooling: PoolingConfig
    plan: GridPlan
    version: str = "0.1.0"
    data_version: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def pool(self) -> OrganConfinedMILPool:
        return make_pool(self.pooling, self.plan.spacing_xyz_mm)

    def confine(self, maps: np.ndarray, organs: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
        """Maps (x, y, z, 18) zeroed outside the confinement regions of ``organs`` (unless confine is off)."""
        if not self.pooling.confine:
            return np.asarray(maps, dtype=np.float32)
        return confine(maps, organs, spacing_mm, self.pooling.regions, self.pooling.margins_mm)

    def region_masks(self, organs: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray | None:
        """(18, x, y, z) confinement regions of ``organs``; None when the package does not confine."""
        if not self.pooling.confine:
            return None
        return region_masks(organs, spacing_mm, self.pooling.regions, self.pooling.margins_mm)

    def manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "network": jsonable(dataclasses.asdict(self.network)),
            "pooling": jsonable(dataclasses.asdict(self.pooling)),
            "schema": {
                "abnormalities": list(ABNORMALITIES),
                "organs": {str(k): v for k, v in ORGANS.items()},
                "organ_regions": {
                    k: {"organs": list(ids), "margin_mm": mm}
                    for k, (ids, mm) in confinement_regions(
                        self.pooling.regions, self.pooling.margins_mm
                    ).items()
                },
            },
            "preprocessing": self.plan.to_json(),
            "data_version": self.data_version,
            "thresholds": self.thresholds,
            "metrics": self.metrics,
            "params": self.params,
        }


def make_pool(pooling: PoolingConfig, spacing_mm: Sequence[float]) -> OrganConfinedMILPool:
    """The organ-confined pooling of a pooling config on a grid of ``spacing_mm`` (training and inference)."""
    return OrganConfinedMILPool(
        pooling.regions,
        confine=pooling.confine,
        on_logits=pooling.pool_logits,
        margins_mm=pooling.margins_mm,
        spacing_mm=spacing_mm,
    )


def jsonable(obj: Any) -> Any:
    """Tuples to lists, recursively, so configs serialise to JSON the same way everywhere."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def torch_bytes(obj: Any) -> bytes:
    """``torch.save`` into memory: the zip's inner folder name is then fixed ("archive") instead of the
    (temporary) file's name, so equal weights give equal bytes."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_package(pkg: ModelPackage, out: str | os.PathLike[str]) -> Path:
    """Write weights and manifest atomically (each file); returns the folder."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in pkg.net.state_dict().items()}
    write_bytes_atomic(folder / WEIGHTS, torch_bytes(state))
    write_json_atomic(folder / MANIFEST, pkg.manifest())
    return folder


def load_package(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> ModelPackage:
    """Load a package written by :func:`save_package`; checks the schema matches this code's schema."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{folder}: not a model package (no {MANIFEST}); train one with `dvc repro train`"
        )
    meta = json.loads(manifest_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path}: package format {meta.get('format_version')} != supported {FORMAT_VERSION}"
        )
    if meta["schema"]["abnormalities"] != list(ABNORMALITIES):
        raise ValueError(f"{manifest_path}: abnormality list differs from exact_ct.schema.ABNORMALITIES")
    network = from_dict(NetworkConfig, meta["network"], "network")
    pooling = from_dict(PoolingConfig, meta["pooling"], "pooling")
    plan = GridPlan.from_json(meta["preprocessing"])
    net = ExactNet(network, in_channels=plan.in_channels)
    net.load_state_dict(torch.load(folder / WEIGHTS, map_location=device, weights_only=True))
    net.to(device).eval()
    return ModelPackage(
        net=net,
        network=network,
        pooling=pooling,
        plan=plan,
        version=meta.get("version", ""),
        data_version=meta.get("data_version", ""),
        thresholds={k: float(v) for k, v in meta.get("thresholds", {}).items()},
        metrics=meta.get("metrics", {}),
        params=meta.get("params", {}),
    )
