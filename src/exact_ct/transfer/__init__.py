"""Downstream transfer of a pretrained EXACT package: segmentation and classification fine-tuning,
per-organ embeddings and zero-shot segmentation from anomaly maps (docs/transfer.md)."""
