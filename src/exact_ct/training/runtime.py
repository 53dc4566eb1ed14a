"""What a training process needs around the loop: the torchrun process group, seeding, the LR schedule,
the weight average, mixed precision, RNG states and weights-only checkpoint loading."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exact_ct.io import write_bytes_atomic
from exact_ct.model.package import torch_bytes


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


def config_hash(profile: Any, seed: int, data_version: str, world: int = 1) -> str:
    """16 hex digits identifying an experiment: the (dataclass) profile, the seed, the data version and,
    under torchrun, the number of processes (each process takes ``batch_size`` studies a step, so another
    world size is another optimisation, whose checkpoint must not be resumed)."""
    key: dict[str, Any] = {"profile": dataclasses.asdict(profile), "seed": seed, "data": data_version}
    if world > 1:  # single-process hashes stay what they were
        key["world"] = world
    blob = json.dumps(key, sort_keys=True, default=str)
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


def autocast(device: torch.device, amp: str) -> Any:
    """Mixed precision on CUDA (``bf16`` / ``fp16``); a disabled context on CPU or with ``none``."""
    if device.type != "cuda" or amp == "none":
        return torch.autocast(device_type="cpu", enabled=False)
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def save_atomic(obj: Any, path: Path) -> None:
    write_bytes_atomic(path, torch_bytes(obj))


def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: dict[str, Any]) -> None:
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
