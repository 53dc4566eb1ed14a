"""EXACT-CT: explainable anomaly-aware 3D chest CT from routine scans and reports."""

__version__ = "0.1.0"
