"""One rule for turning a `device` parameter (`auto`, `cpu`, `cuda`, `cuda:N`) into a torch device."""

from __future__ import annotations

import os

import torch


def choose_device(requested: str) -> torch.device:
    """`auto` -> CUDA when torch sees it, else the CPU; `cuda` -> the GPU of this process (LOCAL_RANK
    under torchrun). Asking for CUDA where there is none is an error naming the setting, not a silent
    fall-back to a CPU run that would take hours."""
    requested = requested.strip().lower()
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if requested not in ("auto", "cuda", "gpu") and not requested.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {requested!r}")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={requested} asks for CUDA but torch sees no GPU; use device: auto or cpu")
    if requested.startswith("cuda:"):
        return torch.device(requested)
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def totalsegmentator_device(requested: str) -> str:
    """`auto` in TotalSegmentator's own names (`gpu` / `cpu`); any other value is passed through for
    TotalSegmentator to check (it also knows `mps` and `gpu:N`)."""
    if requested.strip().lower() != "auto":
        return requested
    return "gpu" if choose_device("auto").type == "cuda" else "cpu"
