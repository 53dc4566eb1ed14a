"""Evaluation and explanation: diagnosis metrics with intervals, localization, grounded reports, HTML report."""

from __future__ import annotations
