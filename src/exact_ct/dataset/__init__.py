"""Dataset building: fingerprint, model-grid plan, resampling, cache, patient-level split, label policy."""
