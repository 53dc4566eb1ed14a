"""`device` parameters resolve the same way in training, evaluation and TotalSegmentator."""

from __future__ import annotations

import pytest
import torch

from exact_ct.devices import choose_device, totalsegmentator_device


def test_auto_and_cpu_resolve_to_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto") == torch.device("cpu")
    assert choose_device(" CPU ") == torch.device("cpu")
    assert totalsegmentator_device("auto") == "cpu"
    assert totalsegmentator_device("gpu:1") == "gpu:1"  # TotalSegmentator's own names pass through


def test_cuda_without_a_gpu_is_an_error_naming_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="device=cuda"):
        choose_device("cuda")


def test_cuda_picks_this_process_gpu_under_torchrun(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert choose_device("auto") == torch.device("cuda", 1)
    assert choose_device("cuda:0") == torch.device("cuda", 0)
    assert totalsegmentator_device("auto") == "gpu"


def test_unknown_device_names_are_refused():
    with pytest.raises(ValueError, match="got 'tpu'"):
        choose_device("tpu")
