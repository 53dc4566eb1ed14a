"""Acquisition geometry of a synthetic study: profiles, the canonical RAS+ grid and its DICOM (LPS) twin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SynthProfile:
    """Acquisition ranges of one synth profile.

    Attributes:
        matrix: in-plane matrix (rows = columns).
        pixel_mm: range of the in-plane pixel size; the field of view follows the patient.
        slice_mm: (slice spacings, their probabilities) of the diagnostic series.
        thick_factor: multiples of the slice spacing a thick reconstruction may use.
        noise_hu: range of the quantum noise standard deviation for an average patient.
    """

    matrix: int
    pixel_mm: tuple[float, float]
    slice_mm: tuple[tuple[float, ...], tuple[float, ...]]
    thick_factor: tuple[int, ...]
    noise_hu: tuple[float, float]


#: Acquisition profiles. ``demo`` is a downsampled scanner (coarse pixels, few slices) so that a hundred
#: studies synthesise in about a minute on two cores; ``realistic`` matches clinical chest CT.
PROFILES: dict[str, SynthProfile] = {
    "demo": SynthProfile(
        matrix=128,
        pixel_mm=(2.6, 3.4),
        # weighted towards thicker slices to keep a study near 2 MB of DICOM
        slice_mm=((2.5, 3.0, 4.0, 5.0), (0.1, 0.25, 0.35, 0.3)),
        thick_factor=(2,),
        noise_hu=(6.0, 16.0),
    ),
    "realistic": SynthProfile(
        matrix=512,
        pixel_mm=(0.6, 0.9),
        slice_mm=((1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0), (0.3, 0.15, 0.15, 0.15, 0.1, 0.1, 0.05)),
        thick_factor=(3, 4, 5),
        noise_hu=(12.0, 35.0),
    ),
}


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown synth profile {profile!r}; expected one of {sorted(PROFILES)}")
    return profile


@dataclass(frozen=True)
class Grid:
    """The canonical RAS+ grid of the diagnostic series.

    Array axes are (x, y, z) with x increasing towards the patient's Right, y towards Anterior and z
    towards Superior; ``affine`` maps voxel indices to RAS millimetres and is diagonal and positive.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin_ras: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        a = np.diag([*self.spacing, 1.0])
        a[:3, 3] = self.origin_ras
        return a

    def lps_slice_positions(self) -> np.ndarray:
        """ImagePositionPatient (LPS mm) of every axial slice k, for IOP [1,0,0, 0,1,0].

        DICOM row direction +x(LPS) points to the patient's Left, so DICOM column 0 is the canonical
        voxel with the largest RAS x; likewise DICOM row 0 has the largest RAS y (most anterior).
        """
        nx, ny, nz = self.shape
        sx, sy, sz = self.spacing
        ox, oy, oz = self.origin_ras
        first_ras_x = ox + (nx - 1) * sx
        first_ras_y = oy + (ny - 1) * sy
        z = oz + np.arange(nz) * sz
        return np.stack([np.full(nz, -first_ras_x), np.full(nz, -first_ras_y), z], axis=1)


def canonical_to_dicom_slice(volume_xyz: np.ndarray, k: int) -> np.ndarray:
    """Pixel array (rows, columns) of axial slice ``k`` for IOP [1,0,0,0,1,0] (rows run posterior)."""
    return volume_xyz[::-1, ::-1, k].T
