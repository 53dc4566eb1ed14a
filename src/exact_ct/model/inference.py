"""Inference on one canonical (RAS+, HU) volume from a model package alone."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from exact_ct.dataset.grid import normalise, to_canonical, to_model_grid
from exact_ct.model.package import ModelPackage
from exact_ct.model.predict import predict
from exact_ct.schema import ABNORMALITIES


@dataclass
class GridResult:
    """Outputs on the model grid (useful to evaluation, which works on the cache)."""

    probs: np.ndarray  # (18,)
    organ_probs: np.ndarray  # (10, x, y, z) float32
    maps: np.ndarray  # (18, x, y, z) float32


@torch.no_grad()
def infer_grid(
    image_norm: np.ndarray, package: ModelPackage, device: str | torch.device = "cpu"
) -> GridResult:
    """Run the network on a normalised image already on the model grid, (C, x, y, z) as ``normalise`` gives."""
    net = package.net.to(device).eval()
    pool = package.pool().to(device)
    x = torch.from_numpy(np.ascontiguousarray(image_norm, dtype=np.float32))[None].to(device)
    pred = predict(net, pool, x, package.pooling.k_test)
    return GridResult(
        probs=pred.probs[0].cpu().numpy(),
        organ_probs=pred.organ_probs[0].cpu().numpy(),
        maps=pred.maps[0].cpu().numpy(),
    )


def infer_volume(
    hu: np.ndarray,
    affine: np.ndarray,
    package: ModelPackage,
    device: str | torch.device = "cpu",
    *,
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Probabilities, organs and anomaly maps for one canonical volume.

    Args:
        hu: (x, y, z) HU array in RAS+ (as exact_ct.io.load_canonical returns it).
        affine: its 4x4 RAS millimetre affine.
        package: a loaded model package (its preprocessing spec defines the model grid).
        timings: if given, seconds spent per step are added to it (``to_model_grid``, ``network``,
            ``to_canonical``) for benchmarks; nothing is timed into the outputs.
    Returns:
        (probabilities by abnormality name, organ label map uint8 on the canonical grid,
        anomaly maps float32 (x, y, z, 18) on the canonical grid, channels in schema order).
        Outside the model grid's field of view organs are 0 and maps 0. The maps array is
        Fortran-ordered (x fastest, as NIfTI stores it), so one channel ``maps[..., a]`` is contiguous.
    """
    clock = StepClock(timings)
    image, g_aff = to_model_grid(np.asarray(hu), affine, package.plan)
    clock.lap("to_model_grid")
    res = infer_grid(normalise(image, package.plan), package, device)
    organs_grid = res.organ_probs.argmax(0).astype(np.uint8)
    clock.lap("network")
    shape = np.asarray(hu).shape[:3]
    organs = to_canonical(organs_grid, g_aff, affine, shape, order=0, dtype=np.uint8)
    # All 18 channels in one separable pass (grid.to_canonical), not one scipy transform each.
    maps = to_canonical(np.moveaxis(res.maps, 0, -1), g_aff, affine, shape, order=1, dtype=np.float32)
    clock.lap("to_canonical")
    probs = {name: float(p) for name, p in zip(ABNORMALITIES, res.probs, strict=True)}
    return probs, organs, maps


class StepClock:
    """Adds the seconds since the previous lap to ``timings[name]``; does nothing without a dict."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.timings is not None:
            now = time.perf_counter()
            self.timings[name] = self.timings.get(name, 0.0) + now - self.t
            self.t = now
