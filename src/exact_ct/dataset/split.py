"""Patient-level train/val/test split that depends on the pseudonymised patient id only.

A study's split is a pure function of (salt, patient id): adding a batch never moves an existing
patient to another split, and all studies of one patient always land in the same split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of patients per split (they must sum to 1) and the hash salt."""

    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    salt: str = "exact-ct-split-v1"

    def __post_init__(self) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6 or min(self.train, self.val, self.test) < 0:
            raise ValueError(f"build_dataset.split fractions must be >= 0 and sum to 1, got {total}")


def patient_unit(patient_id: str, salt: str) -> float:
    """A number in [0, 1) uniformly spread by SHA-256 of the salted patient id."""
    digest = hashlib.sha256(f"{salt}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(patient_id: str, cfg: SplitConfig) -> str:
    u = patient_unit(patient_id, cfg.salt)
    if u < cfg.train:
        return "train"
    if u < cfg.train + cfg.val:
        return "val"
    return "test"
