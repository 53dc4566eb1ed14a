"""Tiny toy interim trees (ingest + pseudo_masks + parse_reports outputs) for tests and benchmarks.

Simple numpy phantoms (ellipsoids) that take milliseconds to make, unlike full synthetic studies; a
"Lung nodule" / "Cardiomegaly" / "Pleural effusion" label changes the image, so a model can learn them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from exact_ct.io import save_nifti, write_csv_atomic
from exact_ct.schema import ABNORMALITIES

TOY_FINDINGS = ("Lung nodule", "Cardiomegaly", "Pleural effusion")


def _ellipsoid(
    grid: tuple[np.ndarray, ...], center: tuple[float, ...], radii: tuple[float, ...]
) -> np.ndarray:
    total: np.ndarray = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True))  # type: ignore[assignment]
    return total <= 1.0


def toy_study(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: float, findings: set[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """One phantom: (HU int16, affine, organs uint8, lesions by name) on a RAS+ grid."""
    X, Y, Z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    nx, ny, nz = shape
    jitter = rng.uniform(-1.0, 1.0, size=2)
    cx, cy, cz = nx / 2 + jitter[0], ny / 2 + jitter[1], nz / 2
    organs = np.zeros(shape, np.uint8)
    organs[_ellipsoid((X, Y), (cx, cy), (0.45 * nx, 0.4 * ny))] = 9  # body, all slices
    organs[_ellipsoid((X, Y, Z), (cx, cy, cz), (0.2 * nx, 0.3 * ny, 0.6 * nz)) & (organs == 9)] = 8
    lung_r = _ellipsoid((X, Y, Z), (cx + 0.2 * nx, cy, cz), (0.15 * nx, 0.3 * ny, 0.45 * nz))
    lung_l = _ellipsoid((X, Y, Z), (cx - 0.2 * nx, cy, cz), (0.15 * nx, 0.3 * ny, 0.45 * nz))
    pleura_r = _ellipsoid((X, Y, Z), (cx + 0.2 * nx, cy, cz), (0.17 * nx, 0.32 * ny, 0.47 * nz)) & ~lung_r
    pleura_l = _ellipsoid((X, Y, Z), (cx - 0.2 * nx, cy, cz), (0.17 * nx, 0.32 * ny, 0.47 * nz)) & ~lung_l
    organs[pleura_r | pleura_l] = 4
    organs[lung_r] = 2  # RAS+: x grows towards the patient's right
    organs[lung_l] = 1
    heart_r = 0.16 if "Cardiomegaly" in findings else 0.11
    organs[
        _ellipsoid(
            (X, Y, Z), (cx - 0.03 * nx, cy + 0.12 * ny, cz - 0.1 * nz), (heart_r * nx, heart_r * nx, 0.2 * nz)
        )
    ] = 5
    organs[_ellipsoid((X, Y), (cx + 0.02 * nx, cy - 0.1 * ny), (0.03 * nx, 0.03 * nx))] = 6
    organs[_ellipsoid((X, Y), (cx - 0.02 * nx, cy - 0.2 * ny), (0.025 * nx, 0.025 * nx))] = 7
    organs[_ellipsoid((X, Y), (cx, cy - 0.02 * ny), (0.03 * nx, 0.03 * nx)) & (Z > cz)] = 3
    hu_of = np.array([-1000, -850, -850, -950, -60, 40, 45, 30, 10, 20], np.float32)
    hu = hu_of[organs] + rng.normal(0, 12, shape).astype(np.float32)
    lesions: dict[str, np.ndarray] = {}
    if "Lung nodule" in findings:
        lung = organs == (1 if rng.random() < 0.5 else 2)
        pts = np.argwhere(lung)
        c = pts[rng.integers(len(pts))]
        ball = _ellipsoid((X, Y, Z), tuple(float(v) for v in c), (1.6, 1.6, 1.6)) & lung
        hu[ball] = 60.0
        lesions["Lung nodule"] = ball.astype(np.uint8)
    if "Pleural effusion" in findings:
        fluid = (organs == 4) & (Y < cy)
        hu[fluid] = 15.0
        lesions["Pleural effusion"] = fluid.astype(np.uint8)
    if "Cardiomegaly" in findings:
        lesions["Cardiomegaly"] = (organs == 5).astype(np.uint8)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -np.asarray(shape) * spacing / 2
    return np.clip(hu, -1024, 3000).astype(np.int16), affine, organs, lesions


def make_toy_interim(
    root: Path,
    batch: str,
    n_studies: int,
    *,
    seed: int = 0,
    shape: tuple[int, int, int] = (40, 32, 24),
    spacing: float = 8.0,
    patients: int | None = None,
    with_truth: bool = False,
    prevalence: float = 0.4,
) -> list[str]:
    """Write ``root/interim/{ingest,pseudo_masks,parse_reports}/<batch>/`` for ``n_studies`` phantoms.

    Study ids are ``s-<batch>-<i>`` and patient ids ``p-<batch>-<i % patients>``; with ``with_truth``
    the synthetic truth goes to ``root/synth/<batch>/truth/`` keyed by accession as ``exact synth`` does
    (ids then are real pseudonyms of the accessions, which needs EXACT_MODE=test or a key).
    """
    rng = np.random.default_rng(seed)
    ingest = root / "interim" / "ingest" / batch
    masks = root / "interim" / "pseudo_masks" / batch / "masks"
    parse = root / "interim" / "parse_reports" / batch
    truth = root / "synth" / batch / "truth"
    patients = patients or n_studies
    manifest, labels, truth_rows = [], [], []
    ids = []
    for i in range(n_studies):
        accession = f"ACC-{batch}-{i:04d}"
        if with_truth:
            from exact_ct.privacy import study_pseudonym

            sid = study_pseudonym(accession)
        else:
            sid = f"s-{batch}-{i:04d}"
        pid = f"p-{batch}-{i % patients:04d}"
        findings = {f for f in TOY_FINDINGS if rng.random() < prevalence}
        hu, aff, organs, lesions = toy_study(rng, shape, spacing, findings)
        save_nifti(hu, aff, ingest / "volumes" / f"{sid}.nii.gz", dtype=np.int16)
        save_nifti(organs, aff, masks / f"{sid}.nii.gz", dtype=np.uint8)
        manifest.append(
            {
                "study_id": sid,
                "patient_id": pid,
                "volume": f"volumes/{sid}.nii.gz",
                "shape_xyz": "x".join(map(str, shape)),
                "spacing_xyz_mm": f"{spacing}x{spacing}x{spacing}",
            }
        )
        row: dict[str, object] = {"study_id": sid}
        t_row: dict[str, object] = {"accession_number": accession, "patient_id": pid}
        for name in ABNORMALITIES:
            present = name in findings
            t_row[name] = int(present)
            if present:
                row[name] = -1 if rng.random() < 0.15 else 1
            else:
                row[name] = 0 if rng.random() < 0.5 else None
        labels.append(row)
        truth_rows.append(t_row)
        if with_truth:
            save_nifti(organs, aff, truth / "organs" / f"{accession}.nii.gz", dtype=np.uint8)
            for name, m in lesions.items():
                save_nifti(
                    m,
                    aff,
                    truth / "lesions" / accession / f"{name.lower().replace(' ', '_')}.nii.gz",
                    dtype=np.uint8,
                )
        ids.append(sid)
    write_csv_atomic(ingest / "manifest.csv", pd.DataFrame(manifest))
    lab = pd.DataFrame(labels, columns=["study_id", *ABNORMALITIES])
    for name in ABNORMALITIES:
        lab[name] = lab[name].astype("Int8")
    write_csv_atomic(parse / "labels.csv", lab)
    if with_truth:
        write_csv_atomic(truth / "labels.csv", pd.DataFrame(truth_rows))
    return ids


#: A train profile that trains the toy trees in seconds (tiny network, 2 epochs, checkpoints every 2
#: steps); tests override what they vary, e.g. ``{**TINY_TRAIN, "epochs": 3}``.
TINY_TRAIN: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 2,
    "lr": 3e-3,
    "warmup_steps": 2,
    "workers": 0,
    "threads": 1,
    "device": "cpu",
    "checkpoint_every_steps": 2,
    "pseudo_mask_start": 1.0,
    "pseudo_mask_epochs": 1,
    "network": {"channels": [4, 8]},
    "pooling": {"k_half": 2, "k_full": 4, "k_test": 2},
    "loss": {"organ_weight_epochs": 1},
    "augment": {"affine_prob": 0.5, "rotate_deg": 5.0, "intensity_prob": 0.5, "noise_std": 0.02},
}
