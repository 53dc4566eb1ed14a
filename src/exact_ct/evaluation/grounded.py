"""Grounded reports: template sentences whose every positive statement points at a place in the volume.

No language model: for each finding above its threshold, the organ-confined anomaly map gives the
region (connected voxels at or above a fraction of the peak, containing the peak), from which come the
organ, side, lobe (approximate, by position inside the lung), axial slice range, extent in mm and the
peak location. Confidently absent findings get a short negative sentence. The text is written so that
our own report labeller (exact_ct.reports) reads it back; the evaluate stage scores that round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from exact_ct.evaluation.config import GroundingConfig
from exact_ct.schema import ABNORMALITIES, ORGAN_IDS, ORGANS

#: Words the report labeller recognises for each abnormality (the CT-RATE name unless it is too generic).
PHRASES: Mapping[str, str] = {
    **{name: name.lower() for name in ABNORMALITIES},
    "Medical material": "metallic implant (medical material)",
}
NEGATIVE_PHRASES: Mapping[str, str] = {
    **{name: name.lower() for name in ABNORMALITIES},
    "Medical material": "metallic implant",
}

_ORGAN_TEXT = {
    "lung_left": "the left lung",
    "lung_right": "the right lung",
    "airway": "the central airways",
    "pleura": "the pleural space",
    "heart": "the heart",
    "aorta": "the thoracic aorta",
    "esophagus": "the esophagus",
    "mediastinum": "the mediastinum",
    "body": "the chest wall and soft tissues",
    "outside_body": "outside the body",
}


@dataclass(frozen=True)
class Finding:
    """Where one positive finding lies, measured on the grid of the map it was read from.

    Slices are 1-based axial (z) indices of that grid; extent is the region's bounding box in mm
    along x (right-left), y (anterior-posterior) and z (superior-inferior).
    """

    abnormality: str
    probability: float
    threshold: float
    organ: str
    side: str
    lobe: str
    slice_first: int
    slice_last: int
    n_slices: int
    extent_mm: tuple[float, float, float]
    peak_voxel: tuple[int, int, int]
    peak_ras_mm: tuple[float, float, float]
    peak_value: float
    voxels: int

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _lobe(organ: str, peak: tuple[int, int, int], organs: np.ndarray) -> str:
    """Approximate lobe from the peak's height and depth inside its lung (no fissures are segmented).

    Right lung: upper 40 % of its height -> upper lobe; the middle band's anterior half -> middle lobe;
    the rest -> lower lobe. Left lung: upper half -> upper lobe, else lower lobe.
    """
    if organ not in ("lung_left", "lung_right"):
        return ""
    lung = np.argwhere(organs == ORGAN_IDS[organ])
    if len(lung) == 0:
        return ""
    z0, z1 = lung[:, 2].min(), lung[:, 2].max()
    frac = (peak[2] - z0) / max(1, z1 - z0)  # 0 = lung base, 1 = apex (RAS+: z grows superiorly)
    side = organ.split("_")[1]
    if side == "left":
        return "left upper lobe" if frac >= 0.5 else "left lower lobe"
    if frac >= 0.6:
        return "right upper lobe"
    at_z = lung[lung[:, 2] == peak[2]]
    y_mid = float(np.median(at_z[:, 1])) if len(at_z) else float(np.median(lung[:, 1]))
    if frac >= 0.3 and peak[1] >= y_mid:  # RAS+: y grows anteriorly
        return "right middle lobe"
    return "right lower lobe"


def _side(organ: str, region: np.ndarray, organs: np.ndarray) -> str:
    if organ in ("lung_left", "lung_right"):
        return organ.split("_")[1]
    body = np.argwhere(organs > 0)
    if len(body) == 0:
        return ""
    mid = (body[:, 0].min() + body[:, 0].max()) / 2.0
    idx = np.argwhere(region)
    lo, hi = idx[:, 0].min(), idx[:, 0].max()
    width = max(1.0, body[:, 0].max() - body[:, 0].min())
    if lo > mid + 0.05 * width:  # RAS+: x grows towards the patient's right
        return "right"
    if hi < mid - 0.05 * width:
        return "left"
    return "bilateral" if lo < mid - 0.05 * width and hi > mid + 0.05 * width else "midline"


def describe(
    name: str,
    score_map: np.ndarray,
    organs: np.ndarray,
    affine: np.ndarray,
    probability: float,
    threshold: float,
    cfg: GroundingConfig | None = None,
) -> Finding:
    """Measure one positive finding from its organ-confined map (x, y, z) on the grid of ``affine``."""
    cfg = cfg or GroundingConfig()
    m = np.asarray(score_map, dtype=np.float32)
    peak = tuple(int(v) for v in np.unravel_index(int(np.argmax(m)), m.shape))
    peak_value = float(m[peak])
    level = max(cfg.extent_fraction * peak_value, cfg.min_map_value)
    labels, _ = ndimage.label(m >= level)
    region = labels == labels[peak] if labels[peak] > 0 else np.zeros(m.shape, bool)
    if not region.any():  # a flat map (peak below min_map_value): the peak voxel alone
        region[peak] = True
    idx = np.argwhere(region)
    lo, hi = idx.min(0), idx.max(0)
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    extent = tuple(float(round((b - a + 1) * s, 1)) for a, b, s in zip(lo, hi, spacing, strict=True))
    counts = np.bincount(np.asarray(organs)[region].astype(np.int64), minlength=len(ORGANS))
    counts[0] = 0
    organ = ORGANS[int(np.argmax(counts))] if counts.any() else ORGANS[int(np.asarray(organs)[peak])]
    ras = tuple(
        float(round(v, 1)) for v in (np.asarray(affine) @ np.append(np.asarray(peak, float), 1.0))[:3]
    )
    return Finding(
        abnormality=name,
        probability=float(probability),
        threshold=float(threshold),
        organ=organ,
        side=_side(organ, region, np.asarray(organs)),
        lobe=_lobe(organ, peak, np.asarray(organs)),  # type: ignore[arg-type]
        slice_first=int(lo[2]) + 1,
        slice_last=int(hi[2]) + 1,
        n_slices=int(np.asarray(organs).shape[2]),
        extent_mm=extent,  # type: ignore[arg-type]
        peak_voxel=peak,  # type: ignore[arg-type]
        peak_ras_mm=ras,  # type: ignore[arg-type]
        peak_value=peak_value,
        voxels=int(region.sum()),
    )


def location_text(f: Finding) -> str:
    """'the right upper lobe of the right lung', 'the left side of the pleural space', 'the heart'."""
    organ = _ORGAN_TEXT.get(f.organ, f.organ.replace("_", " "))
    if f.lobe:
        return f"the {f.lobe} of {organ}"
    if f.side in ("left", "right"):
        return f"the {f.side} side of {organ}"
    if f.side == "bilateral":
        return f"both sides of {organ}"
    return organ


def sentence(f: Finding) -> str:
    """One positive sentence; every number comes from the map."""
    ex, ey, ez = f.extent_mm
    x, y, z = f.peak_ras_mm
    i, j, k = f.peak_voxel
    slices = (
        f"axial slice {f.slice_first}"
        if f.slice_first == f.slice_last
        else f"axial slices {f.slice_first}-{f.slice_last}"
    )
    phrase = PHRASES[f.abnormality]
    return (
        f"{phrase[0].upper()}{phrase[1:]} in {location_text(f)} (probability {f.probability:.2f}, "
        f"threshold {f.threshold:.2f}): {slices} of {f.n_slices}, extent about {ex:.0f} x {ey:.0f} x {ez:.0f} mm "
        f"(right-left x anterior-posterior x superior-inferior), peak at voxel ({i}, {j}, {k}), "
        f"RAS ({x:.0f}, {y:.0f}, {z:.0f}) mm."
    )


def negative_sentence(name: str) -> str:
    return f"No {NEGATIVE_PHRASES[name]}."


@dataclass(frozen=True)
class GroundedReport:
    """Positive findings (measured), names stated absent, and the plain text the labeller reads."""

    findings: tuple[Finding, ...]
    absent: tuple[str, ...]
    text: str

    def stated(self) -> dict[str, int | None]:
        """What the text states per abnormality: 1 present, 0 absent, None silent."""
        pos = {f.abnormality for f in self.findings}
        return {n: 1 if n in pos else (0 if n in self.absent else None) for n in ABNORMALITIES}

    def to_json(self) -> dict[str, Any]:
        return {"findings": [f.to_json() for f in self.findings], "absent": list(self.absent)}


def build_report(
    probs: Mapping[str, float],
    thresholds: Mapping[str, float],
    confined_maps: np.ndarray,
    organs: np.ndarray,
    affine: np.ndarray,
    cfg: GroundingConfig | None = None,
) -> GroundedReport:
    """Grounded report of one study from its probabilities, thresholds and confined maps (x, y, z, 18)."""
    cfg = cfg or GroundingConfig()
    findings: list[Finding] = []
    absent: list[str] = []
    for a, name in enumerate(ABNORMALITIES):
        p, t = float(probs[name]), float(thresholds.get(name, 0.5))
        if p >= t:
            findings.append(describe(name, confined_maps[..., a], organs, affine, p, t, cfg))
        elif p < cfg.absent_ratio * t:
            absent.append(name)
    findings.sort(key=lambda f: (-f.probability, ABNORMALITIES.index(f.abnormality)))
    lines = [sentence(f) for f in findings]
    lines += [negative_sentence(n) for n in absent]
    impression = (
        "; ".join(f"{PHRASES[f.abnormality]} ({location_text(f)})" for f in findings)
        if findings
        else "no finding above threshold"
    )
    # One statement per line: the labeller's sentence splitter then never merges a negation into a finding.
    text = (
        "FINDINGS:\n"
        + "\n".join(lines)
        + "\n\nIMPRESSION:\n"
        + impression[0].upper()
        + impression[1:]
        + ".\n"
    )
    return GroundedReport(tuple(findings), tuple(absent), text)


def to_markdown(report: GroundedReport, title: str = "Grounded report", model: str = "") -> str:
    """report.md: the text plus a table of the measured findings and a research-use disclaimer."""
    out = [f"# {title}", ""]
    if model:
        out += [f"Model: {model}", ""]
    out += ["Generated from the anomaly maps by fixed templates; research use only, not a diagnosis.", ""]
    out += [report.text.rstrip(), ""]
    if report.findings:
        out += [
            "| finding | probability | threshold | location | slices | extent (mm) | peak RAS (mm) |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in report.findings:
            out.append(
                f"| {f.abnormality} | {f.probability:.3f} | {f.threshold:.3f} | {location_text(f)} | "
                f"{f.slice_first}-{f.slice_last} | {' x '.join(f'{v:.0f}' for v in f.extent_mm)} | "
                f"{', '.join(f'{v:.0f}' for v in f.peak_ras_mm)} |"
            )
        out.append("")
    return "\n".join(out)


def score_reports(
    stated: Sequence[Mapping[str, int | None]],
    relabelled: Sequence[Sequence[int | None]],
    reference: np.ndarray,
    valid: np.ndarray | None = None,
) -> dict[str, Any]:
    """Clinical-efficacy F1 of generated reports, re-labelled by our labeller, against reference labels.

    Args:
        stated: what each generated report meant to say (GroundedReport.stated()).
        relabelled: the labeller's 1/0/-1/None per abnormality for each generated text.
        reference: (n, 18) binary reference labels; ``valid`` masks uncertain ones.
    Returns:
        macro and micro F1 (a re-labelled 1 counts as positive, anything else negative), per-abnormality
        F1, and ``roundtrip_agreement``: the share of stated present/absent values the labeller read back
        exactly (checks that the templates are understood, independently of the model's accuracy).
    """
    from sklearn.metrics import f1_score

    pred = np.array([[1 if v == 1 else 0 for v in row] for row in relabelled], dtype=np.int8).reshape(
        -1, len(ABNORMALITIES)
    )
    ref = np.asarray(reference, dtype=np.int8).reshape(-1, len(ABNORMALITIES))
    valid = np.ones_like(ref, bool) if valid is None else np.asarray(valid, bool)
    per: dict[str, float | None] = {}
    for j, name in enumerate(ABNORMALITIES):
        yy, pp = ref[valid[:, j], j], pred[valid[:, j], j]
        per[name] = float(f1_score(yy, pp, zero_division=0)) if yy.sum() > 0 else None
    defined = [v for v in per.values() if v is not None]
    agree = total = 0
    for s, r in zip(stated, relabelled, strict=True):
        for j, name in enumerate(ABNORMALITIES):
            if s[name] is not None:
                total += 1
                agree += int(r[j] == s[name])
    return {
        "macro_f1": float(np.mean(defined)) if defined else None,
        "micro_f1": float(f1_score(ref[valid], pred[valid], zero_division=0)) if valid.any() else None,
        "per_abnormality_f1": per,
        "roundtrip_agreement": agree / total if total else None,
        "statements": total,
        "reports": len(stated),
    }
