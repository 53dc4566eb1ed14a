"""Zero-shot lesion segmentation: average the named anomaly maps and threshold them (EXACT-Seg style).

No lesion mask is ever seen: the mask is read off the pretrained model's anomaly maps. Threshold modes:

* ``top-k %`` (e.g. ``"5%"``): the k % highest-scoring voxels of the region the named findings live in
  (the union of their organ regions in the predicted organs; the whole volume when that is empty), as
  the evaluation's localisation Dice does; the mask's size is then fixed relative to the region;
* absolute (e.g. ``"0.3"``): every voxel whose averaged map value is at least the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from exact_ct.schema import ABNORMALITIES, abnormality_index, organ_regions

DEFAULT_THRESHOLD = "5%"
OUTPUT = "zero_shot_seg.nii.gz"
SUMMARY = "zero_shot_seg.json"


@dataclass(frozen=True)
class Threshold:
    """``mode`` is ``topk`` (value = percent of the region) or ``absolute`` (value = map level)."""

    mode: str
    value: float

    @classmethod
    def parse(cls, spec: str | float) -> Threshold:
        """``"5%"`` -> top 5 %; ``"0.3"`` or ``0.3`` -> absolute 0.3."""
        text = str(spec).strip()
        try:
            if text.endswith("%"):
                value = float(text[:-1])
                if not 0.0 < value <= 100.0:
                    raise ValueError
                return cls("topk", value)
            value = float(text)
        except ValueError:
            raise ValueError(
                f"zero-shot threshold {spec!r}: expected a percentage in (0, 100] like '5%' "
                "or an absolute map level in [0, 1] like '0.3'"
            ) from None
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ValueError(f"zero-shot threshold {spec!r}: an absolute level must lie in [0, 1]")
        return cls("absolute", value)


def parse_names(names: str | Sequence[str]) -> list[str]:
    """Comma-separated (or listed) abnormality names, checked against the schema, order kept."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [n.strip() for n in names]
    items = [n for n in items if n]
    if not items:
        raise ValueError("zero-shot segmentation needs at least one abnormality name")
    for n in items:
        try:
            abnormality_index(n)
        except KeyError as e:  # the CLI reports ValueErrors as a clean one-line error
            raise ValueError(str(e).strip("'\"")) from None
    return list(dict.fromkeys(items))


def zero_shot_mask(
    maps: np.ndarray,
    names: Sequence[str],
    threshold: Threshold,
    organs: np.ndarray | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
) -> np.ndarray:
    """uint8 lesion mask from anomaly maps (x, y, z, 18), channels in schema order.

    Args:
        organs: organ label map on the same grid; restricts top-k % to the findings' organ regions.
        regions: per-abnormality organ regions (the package's); schema defaults when None.
    """
    from exact_ct.evaluation.localization import topk_mask

    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[-1] != len(ABNORMALITIES):
        raise ValueError(f"anomaly maps must be (x, y, z, {len(ABNORMALITIES)}), got {maps.shape}")
    score = maps[..., [abnormality_index(n) for n in names]].astype(np.float32).mean(-1)
    if threshold.mode == "absolute":
        return (score >= threshold.value).astype(np.uint8)
    region = None
    if organs is not None:
        res = organ_regions({k: list(v) for k, v in (regions or {}).items()})
        ids = sorted({int(o) for n in names for o in res[n]})
        region = np.isin(organs, ids)
        if not region.any():
            region = None  # the model found none of the organs: fall back to the whole volume
    return topk_mask(score, threshold.value, region).astype(np.uint8)


def write_zero_shot(
    out_dir: Path,
    names: str | Sequence[str],
    threshold: str | float = DEFAULT_THRESHOLD,
    regions: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Read ``anomaly_maps.nii.gz`` and ``organs.nii.gz`` written by ``exact infer`` in ``out_dir`` and write
    ``zero_shot_seg.nii.gz`` (uint8 0/1, same grid) and a small JSON summary beside them."""
    import nibabel as nib

    from exact_ct.io import save_nifti, spacing_from_affine, write_json_atomic

    out_dir = Path(out_dir)
    chosen = parse_names(names)
    thr = Threshold.parse(threshold)
    maps_img = cast(nib.Nifti1Image, nib.load(str(out_dir / "anomaly_maps.nii.gz")))
    organs_path = out_dir / "organs.nii.gz"
    organs = (
        np.asanyarray(cast(nib.Nifti1Image, nib.load(str(organs_path))).dataobj)
        if organs_path.is_file()
        else None
    )
    mask = zero_shot_mask(np.asanyarray(maps_img.dataobj), chosen, thr, organs, regions)
    save_nifti(mask, maps_img.affine, out_dir / OUTPUT, dtype=np.uint8)
    voxel_ml = float(np.prod(np.asarray(spacing_from_affine(maps_img.affine)))) / 1000.0
    summary = {
        "file": OUTPUT,
        "abnormalities": chosen,
        "threshold": {"mode": thr.mode, "value": thr.value},
        "voxels": int(mask.sum()),
        "volume_ml": round(int(mask.sum()) * voxel_ml, 3),
    }
    write_json_atomic(out_dir / SUMMARY, summary)
    return summary
