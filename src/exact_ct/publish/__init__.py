"""Publishing: versioned model registry, model cards, MONAI bundle configs, champion/challenger gate."""

from __future__ import annotations
