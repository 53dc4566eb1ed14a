"""The contract between stages: abnormality names, organ label ids, organ regions and label values."""

from __future__ import annotations

from types import MappingProxyType

#: The 18 CT-RATE abnormalities, spelled and ordered exactly as in CT-RATE (DESIGN.md section 4).
ABNORMALITIES: tuple[str, ...] = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)

#: Organ label map ids (pseudo masks and model output); disjoint integer labels.
ORGANS: MappingProxyType[int, str] = MappingProxyType(
    {
        0: "outside_body",
        1: "lung_left",
        2: "lung_right",
        3: "airway",
        4: "pleura",
        5: "heart",
        6: "aorta",
        7: "esophagus",
        8: "mediastinum",
        9: "body",
    }
)
ORGAN_IDS: MappingProxyType[str, int] = MappingProxyType({name: i for i, name in ORGANS.items()})
NUM_ORGAN_CLASSES = len(ORGANS)

_LUNGS = (1, 2)
#: Default region (set of organ ids) each abnormality is confined to. Configurable via params.
DEFAULT_ORGAN_REGIONS: MappingProxyType[str, tuple[int, ...]] = MappingProxyType(
    {
        "Medical material": (1, 2, 3, 4, 5, 6, 7, 8, 9),
        "Arterial wall calcification": (6,),
        "Cardiomegaly": (5,),
        "Pericardial effusion": (5,),
        "Coronary artery wall calcification": (5,),
        "Hiatal hernia": (7, 8),
        "Lymphadenopathy": (8,),
        "Emphysema": _LUNGS,
        "Atelectasis": _LUNGS,
        "Lung nodule": _LUNGS,
        "Lung opacity": _LUNGS,
        "Pulmonary fibrotic sequela": _LUNGS,
        "Pleural effusion": (4,),
        "Mosaic attenuation pattern": _LUNGS,
        "Peribronchial thickening": (1, 2, 3),
        "Consolidation": _LUNGS,
        "Bronchiectasis": (1, 2, 3),
        "Interlobular septal thickening": _LUNGS,
    }
)

#: Label values per study and abnormality. "Not mentioned" is an empty cell (None / NaN).
PRESENT = 1
ABSENT = 0
UNCERTAIN = -1
LABEL_VALUES = (PRESENT, ABSENT, UNCERTAIN)


def abnormality_index(name: str) -> int:
    """Return the channel index of an abnormality, with a clear error for a misspelled name."""
    try:
        return ABNORMALITIES.index(name)
    except ValueError:
        raise KeyError(f"unknown abnormality {name!r}; expected one of {', '.join(ABNORMALITIES)}") from None


def organ_regions(overrides: dict[str, list[int]] | None = None) -> dict[str, tuple[int, ...]]:
    """Default organ regions with optional per-abnormality overrides (from params.yaml)."""
    regions = dict(DEFAULT_ORGAN_REGIONS)
    for name, ids in (overrides or {}).items():
        abnormality_index(name)
        bad = [i for i in ids if i not in ORGANS or i == 0]
        if bad:
            raise ValueError(f"organ region for {name!r} names invalid organ ids {bad}")
        regions[name] = tuple(int(i) for i in ids)
    return regions
