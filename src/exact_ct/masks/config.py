"""Typed, frozen configuration of the pseudo-mask backends, the mask QC and the pseudo_masks stage."""

from __future__ import annotations

from dataclasses import dataclass, field

BACKENDS = ("intensity", "totalsegmentator")


@dataclass(frozen=True)
class IntensityConfig:
    """Thresholds (HU) and sizes (mm) of the classical intensity backend.

    Every default is a textbook CT value, not fitted to one scan: air < -400 HU inside the body, bone
    > 200 HU, mediastinal fat below -30 HU, soft tissue and (contrast) blood above it.
    """

    grid_mm: float = 3.0  # internal working spacing; the result is mapped back to the input grid
    body_hu_min: float = -500.0
    lung_hu_max: float = -400.0
    gas_median_hu_max: float = -960.0  # bowel gas is darker than aerated lung at any resolution
    min_lung_ml: float = 5.0
    bone_hu_min: float = 200.0
    contrast_mean_hu_min: float = 400.0  # a dense component this bright is contrast blood, not bone
    cortex_hu_min: float = 420.0  # cortical bone next to a dense core: bone, not a contrast blood pool
    fat_hu_max: float = -30.0
    airway_area_mm2: tuple[float, float] = (40.0, 700.0)  # tracheal lumen section at the top of the scan
    airway_branch_ratio: float = 2.5  # a section this many times the trachea's is lung, not bronchus
    airway_tube_ratio: float = 2.0  # the seed's connected air stays below this x its area for 20 mm
    airway_min_length_mm: float = 30.0
    airway_wall_mm: float = 1.5  # adult trachea / main bronchus wall, drawn around the fitted lumen
    # A main bronchus touching the lung at the working grid: its lumen is nearly pure air (-1000 HU),
    # aerated lung -700..-900 HU, so a core darker than this inside the merged air is still bronchus.
    airway_lumen_hu: float = -930.0
    lung_hole_max_mm2: float = 400.0  # in-slice holes up to this size inside the lung are vessels
    bone_hole_max_mm2: float = 2000.0  # spinal canal and spongy bone: at most a vertebral body's section
    pleura_shell_mm: float = 3.0  # at least one voxel of the working grid
    effusion_hu: tuple[float, float] = (-20.0, 35.0)  # transudate to exudate; muscle is denser
    effusion_max_mm: float = 60.0
    effusion_regrow_mm: float = 9.0  # thin ends and rims regrown from effusions thicker than 2 voxels
    heart_core_mm: float = 15.0  # erosion radius that detaches the heart from the great vessels
    heart_core_ratio: float = 0.6  # erosion radius: this share of the heart's depth (15-30 mm)
    heart_min_ml: float = 30.0
    aorta_radius_mm: tuple[float, float] = (8.0, 20.0)
    aorta_offset_mm: tuple[float, float] = (25.0, 5.0)  # expected centre: left of / in front of the spine
    aorta_search_mm: float = 30.0  # how far from that point the descending aorta may be
    aorta_step_mm: float = 8.0  # largest in-plane shift of the centre from one slice to the next
    aorta_core_ratio: float = 0.6  # 3-D core of the tube (distance >= ratio x radius) links the arch
    aortic_root_mm: float = 20.0  # unenhanced CT: the ascending tube continued this far into the heart (root)
    esophagus_radius_mm: float = 8.0
    esophagus_split_aorta: bool = True  # contrast CT: the aorta's soft tissue split with the esophagus
    prevertebral_mm: float = 5.0  # ligament and fascia in front of the vertebral bodies: not mediastinum


@dataclass(frozen=True)
class TotalSegConfig:
    """How the TotalSegmentator backend is run (its weights are never downloaded by this project)."""

    home_dir: str = ".totalsegmentator"  # TOTALSEG_HOME_DIR (config.json with usage stats off lives here)
    weights_dir: str = ""  # TOTALSEG_WEIGHTS_PATH; empty -> <home_dir>/nnunet/results
    fast: bool = False
    device: str = "auto"  # auto -> cuda when available else cpu
    pleura_shell_mm: float = 4.0
    effusion_hu: tuple[float, float] = (-20.0, 35.0)  # transudate to exudate; muscle is denser
    effusion_max_mm: float = 60.0


@dataclass(frozen=True)
class QCConfig:
    """Plausible organ volumes (ml) for an adult chest CT and the rules applied to every mask."""

    required: tuple[str, ...] = ("lung_left", "lung_right", "body")
    min_ml: dict[str, float] = field(
        default_factory=lambda: {"lung_left": 50.0, "lung_right": 50.0, "body": 2000.0, "heart": 100.0}
    )
    max_ml: dict[str, float] = field(
        default_factory=lambda: {"lung_left": 5000.0, "lung_right": 5500.0, "heart": 1500.0, "aorta": 600.0}
    )
    lung_ratio_max: float = 3.0  # larger lung / smaller lung


@dataclass(frozen=True)
class PseudoMasksConfig:
    """The ``pseudo_masks`` section of params.yaml."""

    backend: str = "intensity"
    workers: int = 2
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    totalseg: TotalSegConfig = field(default_factory=TotalSegConfig)
    qc: QCConfig = field(default_factory=QCConfig)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"pseudo_masks.backend {self.backend!r}: expected one of {BACKENDS}")
