"""TotalSegmentator backend: run its `total` task (weights from a configured path) and map its classes.

The mapping from TotalSegmentator v2 `total` class ids to our organ ids is fixed here (and checked
against TotalSegmentator's own class map in the tests); pleura and mediastinum, which TotalSegmentator
does not label, are derived with :mod:`exact_ct.masks.derive`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from exact_ct.masks.config import IntensityConfig, TotalSegConfig
from exact_ct.masks.derive import mediastinum_region, pleura, thoracic_cage
from exact_ct.masks.morph import Spacing, fill_holes_2d, hull_2d, largest_component
from exact_ct.masks.steps.body import find_body
from exact_ct.schema import ORGAN_IDS

#: TotalSegmentator v2 `total` class names per organ id of ours (lobes -> lungs, trachea -> airway...).
ORGAN_CLASSES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "lung_left": ("lung_upper_lobe_left", "lung_lower_lobe_left"),
        "lung_right": ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"),
        "airway": ("trachea",),
        "heart": ("heart", "atrial_appendage_left"),
        "aorta": ("aorta",),
        "esophagus": ("esophagus",),
    }
)
#: Mediastinal vessels are "other mediastinal soft tissue" (id 8), not structures to exclude from it.
MEDIASTINAL_CLASSES: tuple[str, ...] = (
    "pulmonary_vein",
    "brachiocephalic_trunk",
    "subclavian_artery_right",
    "subclavian_artery_left",
    "common_carotid_artery_right",
    "common_carotid_artery_left",
    "brachiocephalic_vein_left",
    "brachiocephalic_vein_right",
    "superior_vena_cava",
)
CAGE_PREFIXES: tuple[str, ...] = ("rib_", "sternum", "costal_cartilages", "vertebrae_T")

#: The v2 `total` ids of every class named above (TotalSegmentator 2.x, map_to_binary.class_map["total"]).
TOTAL_V2_IDS: MappingProxyType[str, int] = MappingProxyType(
    {
        "lung_upper_lobe_left": 10,
        "lung_lower_lobe_left": 11,
        "lung_upper_lobe_right": 12,
        "lung_middle_lobe_right": 13,
        "lung_lower_lobe_right": 14,
        "esophagus": 15,
        "trachea": 16,
        **{f"vertebrae_T{12 - i}": 32 + i for i in range(12)},
        "heart": 51,
        "aorta": 52,
        "pulmonary_vein": 53,
        "brachiocephalic_trunk": 54,
        "subclavian_artery_right": 55,
        "subclavian_artery_left": 56,
        "common_carotid_artery_right": 57,
        "common_carotid_artery_left": 58,
        "brachiocephalic_vein_left": 59,
        "brachiocephalic_vein_right": 60,
        "atrial_appendage_left": 61,
        "superior_vena_cava": 62,
        **{f"rib_left_{i}": 91 + i for i in range(1, 13)},
        **{f"rib_right_{i}": 103 + i for i in range(1, 13)},
        "sternum": 116,
        "costal_cartilages": 117,
    }
)
#: roi_subset passed to TotalSegmentator: our organs, the mediastinal vessels and the thoracic cage.
ROI_SUBSET: tuple[str, ...] = tuple(TOTAL_V2_IDS)

#: nnU-Net datasets holding the `total` weights (TotalSegmentator 2.x): 291-295 full, 297 fast (and the
#: crop model that roi_subset uses).
WEIGHT_DATASETS_FULL = (291, 292, 293, 294, 295, 297)
WEIGHT_DATASETS_FAST = (297,)

INSTALL_HINT = (
    "install them offline with `totalseg_download_weights -t total` on a machine with internet access "
    "(or `totalseg_import_weights -i WEIGHTS.zip`), then copy the Dataset29x_* folders into that path, "
    "or set pseudo_masks.totalseg.weights_dir / TOTALSEG_WEIGHTS_PATH; or use --backend intensity"
)


class WeightsMissingError(RuntimeError):
    """TotalSegmentator weights are not installed where the configuration says."""


def _ids(names: tuple[str, ...]) -> list[int]:
    return [TOTAL_V2_IDS[n] for n in names]


def organs_from_totalseg(
    seg: np.ndarray,
    spacing: Spacing,
    hu: np.ndarray | None = None,
    cfg: TotalSegConfig | None = None,
) -> np.ndarray:
    """Our organ label map from a TotalSegmentator v2 `total` label map on the same (RAS+) grid.

    Args:
        seg: TotalSegmentator multilabel output (v2 ids).
        spacing: voxel spacing in mm (x, y, z).
        hu: the CT in HU on the same grid. With it, body is the non-air body and pleural effusions are
            found by density; without it, body is the axial hull of all TotalSegmentator classes and the
            pleura is only the shell around the lungs.
        cfg: shell thickness and effusion density range.
    """
    cfg = cfg or TotalSegConfig()
    seg = np.asarray(seg)
    organ_masks = {organ: np.isin(seg, _ids(names)) for organ, names in ORGAN_CLASSES.items()}
    lungs = organ_masks["lung_left"] | organ_masks["lung_right"]
    cage_ids = [i for n, i in TOTAL_V2_IDS.items() if n.startswith(CAGE_PREFIXES)]
    cage_bone = np.isin(seg, cage_ids)
    labelled = seg > 0
    if hu is not None:
        body = find_body(np.asarray(hu, dtype=np.float32), spacing, IntensityConfig()) | labelled
    else:
        body = fill_holes_2d(hull_2d(largest_component(labelled) | labelled)) if labelled.any() else labelled
    named = np.zeros(seg.shape, dtype=bool)
    for m in organ_masks.values():
        named |= m
    mediastinal = np.isin(seg, _ids(MEDIASTINAL_CLASSES))
    # Everything TotalSegmentator labels that is neither our organ nor mediastinal tissue (bone, muscle,
    # liver, ...) is excluded from the derived pleura and mediastinum.
    other = labelled & ~named & ~mediastinal
    region = (mediastinum_region(lungs, body, cage_bone) & ~named & ~other) | mediastinal
    pleural = pleura(
        lungs,
        thoracic_cage(lungs, cage_bone),
        named | other | mediastinal,
        spacing,
        shell_mm=cfg.pleura_shell_mm,
        hu=None if hu is None else np.asarray(hu, dtype=np.float32),
        effusion_hu=cfg.effusion_hu,
        effusion_max_mm=cfg.effusion_max_mm,
    )
    # A shell voxel that is unlabelled soft tissue between the lungs is pleura, not mediastinum.
    region &= ~pleural
    labels = np.zeros(seg.shape, dtype=np.uint8)
    labels[body] = ORGAN_IDS["body"]
    labels[region] = ORGAN_IDS["mediastinum"]
    labels[pleural] = ORGAN_IDS["pleura"]
    for organ in ("esophagus", "aorta", "heart", "lung_left", "lung_right", "airway"):
        labels[organ_masks[organ]] = ORGAN_IDS[organ]
    return labels


def weights_dir(cfg: TotalSegConfig) -> Path:
    """Where TotalSegmentator will look for weights, by its own rule (TOTALSEG_WEIGHTS_PATH first)."""
    if cfg.weights_dir:
        return Path(cfg.weights_dir)
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    return Path(os.environ.get("TOTALSEG_HOME_DIR") or cfg.home_dir) / "nnunet" / "results"


def check_weights(cfg: TotalSegConfig) -> Path:
    """Fail fast (before TotalSegmentator could try to download) when the `total` weights are missing."""
    path = weights_dir(cfg)
    needed = WEIGHT_DATASETS_FAST if cfg.fast else WEIGHT_DATASETS_FULL
    missing = [d for d in needed if not any(path.glob(f"Dataset{d}_*"))] if path.is_dir() else list(needed)
    if missing:
        names = ", ".join(f"Dataset{d}_*" for d in missing)
        raise WeightsMissingError(
            f"TotalSegmentator weights for task 'total'{' (fast)' if cfg.fast else ''} not found in "
            f"{path.resolve()} (missing {names}); {INSTALL_HINT}"
        )
    return path


def prepare_home(cfg: TotalSegConfig) -> dict[str, str]:
    """Point TotalSegmentator at our home and weights dirs, with usage statistics switched off.

    Returns the environment variables to set; writes ``config.json`` with ``send_usage_stats: false``
    (kept if it exists, only that key forced).
    """
    home = Path(os.environ.get("TOTALSEG_HOME_DIR") or cfg.home_dir)
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "config.json"
    config: dict[str, Any] = {}
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            config = {}
    if config.get("send_usage_stats") is not False:
        from exact_ct.io import write_json_atomic

        config["send_usage_stats"] = False
        write_json_atomic(config_path, config)
    return {
        "TOTALSEG_HOME_DIR": str(home.resolve()),
        "TOTALSEG_WEIGHTS_PATH": str(weights_dir(cfg).resolve()),
    }


SegmentFn = Callable[..., Any]


def _default_segment_fn() -> SegmentFn:
    try:
        from totalsegmentator.python_api import totalsegmentator
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise RuntimeError(f"TotalSegmentator is not importable ({e}); pip install totalsegmentator") from e
    return totalsegmentator


def run_totalsegmentator(
    ct_path: str | os.PathLike[str],
    report_path: str | os.PathLike[str],
    cfg: TotalSegConfig | None = None,
    segment_fn: SegmentFn | None = None,
) -> np.ndarray:
    """Run TotalSegmentator `total` on a NIfTI file and return its label map on the RAS+ grid.

    ``segment_fn`` is ``totalsegmentator.python_api.totalsegmentator`` unless injected (tests inject a
    recorder). Its per-run JSON report is written to ``report_path`` (beside the mask).
    """
    import nibabel as nib

    from exact_ct.devices import totalsegmentator_device

    cfg = cfg or TotalSegConfig()
    env = prepare_home(cfg)
    check_weights(cfg)
    os.environ.update(env)
    fn = segment_fn or _default_segment_fn()
    img = fn(
        input=str(ct_path),
        output=None,
        ml=True,
        task="total",
        roi_subset=list(ROI_SUBSET),
        fast=cfg.fast,
        device=totalsegmentator_device(cfg.device),
        quiet=True,
        report=str(report_path),
    )
    if img is None:
        raise RuntimeError(f"{ct_path}: TotalSegmentator returned no label map")
    canonical = nib.as_closest_canonical(img)
    return np.asanyarray(canonical.dataobj).astype(np.uint8)
