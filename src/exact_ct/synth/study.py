"""One synthetic study: identities, acquisition, phantom, abnormalities and report, in memory."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from exact_ct.schema import ABNORMALITIES, DEFAULT_ORGAN_REGIONS
from exact_ct.synth import geometry
from exact_ct.synth.abnormalities import PAINTERS, sample_labels, structural_from_labels
from exact_ct.synth.anatomy import Patient, build_anatomy
from exact_ct.synth.geometry import Grid
from exact_ct.synth.reports import write_report_text
from exact_ct.synth.shapes import make_space

HU_MIN, HU_MAX = -1024, 3071  # 12-bit stored values with RescaleIntercept -1024

_FIRST = (
    "JANE",
    "JOHN",
    "MARIA",
    "AHMET",
    "ELIF",
    "PETER",
    "ANNA",
    "MEHMET",
    "SOFIA",
    "LUCAS",
    "EMMA",
    "NOAH",
    "AYSE",
    "OMAR",
    "LEA",
    "IVAN",
    "MEI",
    "SAMUEL",
    "ZEYNEP",
    "DAVID",
)
_LAST = (
    "DOE",
    "SMITH",
    "YILMAZ",
    "KAYA",
    "MUELLER",
    "ROSSI",
    "GARCIA",
    "NOVAK",
    "DEMIR",
    "JANSEN",
    "SILVA",
    "KOWALSKI",
    "NGUYEN",
    "OZTURK",
    "BROWN",
    "DUBOIS",
    "PETROV",
    "SATO",
    "CELIK",
    "MARTIN",
)
_INSTITUTIONS = ("SYNTHETIC GENERAL HOSPITAL", "EXAMPLE UNIVERSITY MEDICAL CENTER", "DEMO CITY HOSPITAL")
_DOCTORS = ("HOUSE^GREGORY", "GREY^MEREDITH", "WATSON^JOHN", "QUINN^MICHAELA", "KILDARE^JAMES")


@dataclass
class SeriesPlan:
    """What the scanner wrote for the study besides the diagnostic series."""

    scout: bool
    thick_factor: int  # 0: no second reconstruction; else slab of this many thin slices
    layout: str  # nested | flat | by_series
    feet_first_numbering: bool
    main_kernel: str
    thick_kernel: str


@dataclass
class SyntheticStudy:
    """A rendered study. ``hu``/``organs``/``lesions`` are on the canonical RAS+ grid (x, y, z)."""

    index: int
    seed: int
    batch: str
    profile: str
    accession_number: str
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    age: int
    study_date: str
    study_time: str
    institution: str
    referring_physician: str
    hu: np.ndarray
    affine: np.ndarray
    organs: np.ndarray
    lesions: dict[str, np.ndarray]
    labels: dict[str, int]
    details: dict[str, dict[str, object]]
    grid: Grid
    contrast: bool
    plan: SeriesPlan
    lobes: np.ndarray
    findings: str
    impression: str
    reported_labels: dict[str, int | None]
    noise_events: list[tuple[str, str]]

    def uid(self, *parts: str) -> str:
        """A DICOM UID fixed by seed, batch, study index and the named object."""
        from pydicom.uid import generate_uid

        return str(
            generate_uid(entropy_srcs=["exact-ct-synth", str(self.seed), self.batch, str(self.index), *parts])
        )


def batch_tag(seed: int, batch: str, what: str) -> str:
    """Short uppercase hex namespace for identifiers of one (seed, batch)."""
    return hashlib.sha256(f"{what}:{seed}:{batch}".encode()).hexdigest()[:6].upper()


def patient_number(index: int, seed: int) -> int:
    """About one study in seven is a follow-up of the previous study's patient."""
    if index % 2 == 1 and np.random.default_rng([seed, 7, index]).random() < 0.3:
        return index - 1
    return index


def render_study(
    index: int,
    seed: int,
    profile: str = "demo",
    *,
    batch: str = "",
    label_noise: float = 0.05,
    hedge_share: float = 0.08,
) -> SyntheticStudy:
    """Render study ``index`` of a synthetic hospital: deterministic for (index, seed, profile, batch).

    The batch name only changes identifiers (accession numbers, patient ids, UIDs), not the images.
    """
    prof = geometry.PROFILES[geometry.check_profile(profile)]
    pno = patient_number(index, seed)
    prng = np.random.default_rng([seed, 1, pno])
    rng = np.random.default_rng([seed, 2, index])

    # patient (shared by follow-up studies)
    sex = "F" if prng.random() < 0.45 else "M"
    age0 = int(np.clip(prng.normal(60, 14), 22, 92))
    size = prng.uniform(0.88, 1.12) * (0.93 if sex == "F" else 1.0)
    patient = Patient(
        age=age0 + (index != pno),
        sex=sex,
        half_width=float(165 * size * prng.uniform(0.95, 1.05)),
        half_depth=float(118 * size * prng.uniform(0.9, 1.1)),
        fat=float(prng.uniform(6, 30)),
        muscle=float(prng.uniform(8, 15)),
        lung_height=float(prng.uniform(190, 240) * (size**0.5)),
    )
    birth_year = 2022 - age0
    birth_date = f"{birth_year:04d}{int(prng.integers(1, 13)):02d}{int(prng.integers(1, 29)):02d}"
    patient_name = f"{_LAST[int(prng.integers(len(_LAST)))]}^{_FIRST[int(prng.integers(len(_FIRST)))]}"
    study_date = f"{2022 + (index != pno):04d}{int(prng.integers(1, 13)):02d}{int(prng.integers(1, 29)):02d}"
    study_time = f"{int(rng.integers(7, 20)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}"

    # acquisition geometry
    n = prof.matrix
    lo, hi = prof.pixel_mm
    fov = 2 * patient.half_width * 1.07 + rng.uniform(30, 110)
    pixel = round(float(np.clip(fov / n, lo, hi)), 4)
    choices, weights = prof.slice_mm
    sz = float(rng.choice(choices, p=weights))
    z_lo = -rng.uniform(25.0, 45.0)
    z_hi = patient.lung_height + rng.uniform(0.0, 15.0)
    nz = int(round((z_hi - z_lo) / sz)) + 1
    body_dx, body_dy = rng.uniform(-12, 12), rng.uniform(-20, 5)
    table_z = rng.uniform(-380.0, -120.0)
    origin = (round(-(n - 1) / 2 * pixel, 3), round(-(n - 1) / 2 * pixel, 3), round(z_lo + table_z, 3))
    grid = Grid((n, n, nz), (pixel, pixel, sz), origin)
    x1 = origin[0] + np.arange(n) * pixel - body_dx
    y1 = origin[1] + np.arange(n) * pixel - body_dy
    z1 = z_lo + np.arange(nz) * sz
    space = make_space(rng, x1, y1, z1, grid.spacing, warp_mm=rng.uniform(3.0, 7.0))

    # findings and phantom
    labels = sample_labels(rng, patient)
    contrast = bool(rng.random() < 0.35)
    st = structural_from_labels(rng, labels)
    an = build_anatomy(rng, space, patient, st, contrast)
    lesions = dict(an.lesions)
    details = dict(an.details)
    for name, painter in PAINTERS.items():
        if labels[name]:
            mask, facts = painter(rng, an)
            lesions[name] = mask
            details[name] = facts
    # every present finding keeps a non-empty lesion mask confined to its organ region
    for name in ABNORMALITIES:
        if not labels[name]:
            continue
        region = np.isin(an.organs, DEFAULT_ORGAN_REGIONS[name])
        mask = lesions.get(name, np.zeros(an.organs.shape, dtype=bool)) & region
        if not mask.any():
            # the drawn lesion fell outside its region (tiny patient, odd geometry): call it absent
            labels[name] = 0
            lesions.pop(name, None)
            details.pop(name, None)
            continue
        lesions[name] = mask
    # the scanner table under the patient (outside the body)
    ty = -patient.half_depth - 12.0
    table = (np.abs(space.X) < 0.45 * n * pixel) & (space.Y < ty) & (space.Y > ty - 14) & (an.organs == 0)
    an.hu[table] = np.where(space.Y[table] > ty - 3, 150.0, -400.0)

    # partial-volume blur, then quantum noise
    sigma = (0.55, 0.55, 0.4 if sz <= 2.5 else 0.3)
    hu = ndimage.gaussian_filter(an.hu, sigma)
    lo_n, hi_n = prof.noise_hu
    noise_sd = rng.uniform(lo_n, hi_n) * (patient.half_width / 165.0)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_sd)
    hu_i16 = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)

    plan = SeriesPlan(
        scout=bool(rng.random() < 0.5),
        thick_factor=int(rng.choice(prof.thick_factor)) if rng.random() < 0.35 else 0,
        layout=str(rng.choice(["nested", "flat", "by_series"])),
        feet_first_numbering=bool(rng.random() < 0.3),
        main_kernel=str(rng.choice(["B70f", "LUNG", "Br64", "FC51"])),
        thick_kernel=str(rng.choice(["B30f", "STANDARD", "Br40", "FC08"])),
    )
    report = write_report_text(
        np.random.default_rng([seed, 3, index]),
        labels,
        details,
        contrast,
        label_noise=label_noise,
        hedge_share=hedge_share,
    )
    return SyntheticStudy(
        index=index,
        seed=seed,
        batch=batch,
        profile=profile,
        accession_number=f"{batch_tag(seed, batch, 'acc')}{index:06d}",
        patient_id=f"MRN{batch_tag(seed, batch, 'pid')}{pno:06d}",
        patient_name=patient_name,
        birth_date=birth_date,
        sex=sex,
        age=patient.age,
        study_date=study_date,
        study_time=study_time,
        institution=_INSTITUTIONS[int(prng.integers(len(_INSTITUTIONS)))],
        referring_physician=_DOCTORS[int(rng.integers(len(_DOCTORS)))],
        hu=hu_i16,
        affine=grid.affine,
        organs=an.organs,
        lesions={k: lesions[k].astype(np.uint8) for k in ABNORMALITIES if k in lesions},
        labels=labels,
        details=details,
        grid=grid,
        contrast=contrast,
        plan=plan,
        lobes=an.lobes,
        findings=report.findings,
        impression=report.impression,
        reported_labels=report.reported_labels,
        noise_events=report.noise_events,
    )
