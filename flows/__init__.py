"""Prefect flows: orchestration only (DVC decides what is stale; no torch imports here)."""
