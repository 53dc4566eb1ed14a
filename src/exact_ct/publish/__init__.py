"""Publishing: versioned model registry, model cards, MONAI-bundle-style metadata, champion/challenger gate."""

from __future__ import annotations
