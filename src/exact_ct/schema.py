"""The contract between stages: abnormality names, organ label ids, organ regions and label values."""

from __future__ import annotations

from types import MappingProxyType

#: The 18 CT-RATE abnormalities, spelled and ordered exactly as in CT-RATE; a fixed contract of the pipeline.
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


def organ_labels() -> dict[int, tuple[str, str]]:
    """id -> (name, display colour) of every organ id: the label table of an organ map."""
    return {k: (ORGANS[k], ORGAN_COLOURS[k]) for k in ORGANS}


#: Display colour of each organ id (overlay contours, label tables for 3D Slicer / ITK-SNAP, the label
#: names embedded in organ maps); chosen to stay distinct over a grey CT and a heat map.
ORGAN_COLOURS: MappingProxyType[int, str] = MappingProxyType(
    {
        0: "#000000",
        1: "#4fc3f7",
        2: "#0288d1",
        3: "#aed581",
        4: "#ba68c8",
        5: "#e57373",
        6: "#ffd54f",
        7: "#a1887f",
        8: "#90a4ae",
        9: "#ffffff",
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

_CAVITY = (1, 2, 4)  # lungs and the pleural space: where aerated lung is lost, the cavity remains
#: Confinement region of each abnormality for the organ-confined pooling and the anomaly maps: organ ids
#: and a margin in mm by which their union is dilated (inside the body). The home organs above are where a
#: finding lives; a confinement region must also hold the finding where the lesion itself changes the
#: organ's density and a mask therefore calls its voxels something else (consolidated or collapsed lung is
#: not aerated: intensity masks label it pleura, mediastinum or body). Share of synthetic lesion voxels
#: inside these regions: ``benchmarks/region_cover.py``.
CONFINEMENT_REGIONS: MappingProxyType[str, tuple[tuple[int, ...], float]] = MappingProxyType(
    {
        "Medical material": ((1, 2, 3, 4, 5, 6, 7, 8, 9), 0.0),
        "Arterial wall calcification": ((5, 6), 6.0),
        "Cardiomegaly": ((5,), 12.0),
        "Pericardial effusion": ((5,), 24.0),
        "Coronary artery wall calcification": ((5,), 12.0),
        "Hiatal hernia": ((6, 7, 8), 12.0),
        "Lymphadenopathy": ((3, 6, 7, 8), 6.0),
        "Emphysema": (_CAVITY, 12.0),
        "Atelectasis": (_CAVITY, 12.0),
        "Lung nodule": (_CAVITY, 12.0),
        "Lung opacity": (_CAVITY, 12.0),
        "Pulmonary fibrotic sequela": (_CAVITY, 12.0),
        "Pleural effusion": ((4,), 6.0),
        "Mosaic attenuation pattern": (_CAVITY, 12.0),
        "Peribronchial thickening": ((1, 2, 3, 4), 12.0),
        "Consolidation": (_CAVITY, 12.0),
        "Bronchiectasis": ((1, 2, 3, 4), 12.0),
        "Interlobular septal thickening": (_CAVITY, 12.0),
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


def slug(name: str) -> str:
    """File-name form of an abnormality (lowercase, spaces -> underscores): ``Lung nodule`` -> ``lung_nodule``.

    Synthetic lesion masks, the dataset's truth lookup and the evaluation's curve files use it.
    """
    return name.lower().replace(" ", "_")


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


def confinement_regions(
    overrides: dict[str, list[int]] | None = None, margins_mm: dict[str, float] | None = None
) -> dict[str, tuple[tuple[int, ...], float]]:
    """:data:`CONFINEMENT_REGIONS` with per-abnormality overrides of the organ ids and of the margin."""
    regions = dict(CONFINEMENT_REGIONS)
    for name, ids in organ_regions(overrides).items():
        if name in (overrides or {}):
            regions[name] = (ids, regions[name][1])
    for name, mm in (margins_mm or {}).items():
        abnormality_index(name)
        if not float(mm) >= 0.0:
            raise ValueError(f"confinement margin for {name!r} must be >= 0 mm, got {mm!r}")
        regions[name] = (regions[name][0], float(mm))
    return regions
