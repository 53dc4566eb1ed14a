"""Training: MONAI dict transforms, data loading, the resumable train loop, metrics and dvclive logging."""
