"""Ingest: hospital DICOM/NIfTI drops in, canonical de-identified RAS+ int16 HU volumes out, nothing lost."""

from __future__ import annotations

from exact_ct.ingest.config import IngestConfig
from exact_ct.ingest.pipeline import QuarantineShareExceeded, check_share, ingest_drop
from exact_ct.ingest.qc import RULES, SKIP_REASONS

__all__ = ["RULES", "SKIP_REASONS", "IngestConfig", "QuarantineShareExceeded", "check_share", "ingest_drop"]
