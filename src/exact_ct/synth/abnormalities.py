"""The 18 abnormalities: which a study has (prevalence and co-occurrence) and how each is painted.

Prevalences follow CT-RATE roughly; latent patient factors (age, smoking, infection, heart failure,
airway disease) make findings co-occur the way they do in a hospital. Painting functions change HU
inside the abnormality's organ region and return the voxels they changed as the lesion mask.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np

from exact_ct.schema import ABNORMALITIES
from exact_ct.synth.anatomy import (
    AORTA,
    BODY,
    HEART,
    LUNG_L,
    LUNG_R,
    MEDIASTINUM,
    Anatomy,
    Patient,
    Structural,
)
from exact_ct.synth.shapes import Point, ball_index, segment, smooth_noise


def _sig(v: float) -> float:
    return float(1 / (1 + np.exp(-v)))


def sample_labels(rng: np.random.Generator, patient: Patient) -> dict[str, int]:
    """Draw which abnormalities a study has, with CT-RATE-like prevalence and co-occurrence."""
    age = (patient.age - 60) / 12.0
    smoker = rng.random() < 0.3 + 0.05 * age
    infection = rng.random() < 0.3
    failure = rng.random() < _sig(-2.4 + 0.6 * age)
    airway = rng.random() < 0.12
    p: dict[str, float] = {
        "Medical material": _sig(-2.6 + 0.4 * age),
        "Arterial wall calcification": _sig(-1.4 + 1.6 * age + 0.5 * smoker),
        "Cardiomegaly": 0.03 + 0.45 * failure,
        "Pericardial effusion": 0.03 + 0.25 * failure,
        "Coronary artery wall calcification": _sig(-1.6 + 1.5 * age + 0.5 * smoker),
        "Hiatal hernia": _sig(-2.1 + 0.6 * age),
        "Lymphadenopathy": 0.12 + 0.25 * infection,
        "Emphysema": 0.05 + 0.45 * smoker,
        "Atelectasis": 0.12 + 0.2 * infection,
        "Lung nodule": 0.35 + 0.2 * smoker + 0.05 * age,
        "Lung opacity": 0.15 + 0.6 * infection + 0.1 * failure,
        "Pulmonary fibrotic sequela": _sig(-1.3 + 0.5 * age),
        "Pleural effusion": 0.02 + 0.15 * infection + 0.35 * failure,
        "Mosaic attenuation pattern": 0.02 + 0.35 * airway,
        "Peribronchial thickening": 0.03 + 0.45 * airway + 0.08 * infection,
        "Consolidation": 0.02 + 0.45 * infection,
        "Bronchiectasis": 0.03 + 0.55 * airway,
        "Interlobular septal thickening": 0.03 + 0.3 * failure + 0.05 * infection,
    }
    labels = {name: int(rng.random() < min(max(p[name], 0.0), 0.97)) for name in ABNORMALITIES}
    # co-occurrence that follows from the pathology
    if labels["Pleural effusion"] and rng.random() < 0.6:
        labels["Atelectasis"] = 1
    if labels["Pericardial effusion"] and rng.random() < 0.4:
        labels["Cardiomegaly"] = 1
    if labels["Consolidation"] and rng.random() < 0.6:
        labels["Lung opacity"] = 1
    return labels


def structural_from_labels(rng: np.random.Generator, labels: dict[str, int]) -> Structural:
    """Shape parameters for the abnormalities that change anatomy; sizes vary from subtle to obvious."""
    st = Structural()
    if labels["Cardiomegaly"]:
        st.heart_scale = float(rng.uniform(1.12, 1.4))
    if labels["Pericardial effusion"]:
        st.pericardial_effusion_mm = float(rng.uniform(3.0, 12.0))
    if labels["Pleural effusion"]:
        sides = ["left", "right"] if rng.random() < 0.45 else [str(rng.choice(["left", "right"]))]
        st.pleural_effusion = {
            s: (float(rng.uniform(8.0, 55.0)), float(rng.uniform(50.0, 150.0))) for s in sides
        }
    if labels["Hiatal hernia"]:
        st.hernia_radius_mm = float(rng.uniform(12.0, 30.0))
        st.hernia_air = bool(rng.random() < 0.6)
    if labels["Bronchiectasis"]:
        st.bronchiectasis_lobes = _pick_lobes(rng, prefer=(2, 5, 4))
        st.bronchiectasis_factor = float(rng.uniform(1.6, 2.6))
    if labels["Peribronchial thickening"]:
        st.peribronchial_lobes = _pick_lobes(rng, prefer=(2, 5))
        st.peribronchial_factor = float(rng.uniform(1.8, 3.2))
    return st


def _pick_lobes(rng: np.random.Generator, prefer: tuple[int, ...]) -> tuple[int, ...]:
    if rng.random() < 0.5:
        return tuple(sorted(prefer))
    n = int(rng.integers(1, 4))
    return tuple(sorted(int(v) for v in rng.choice([1, 2, 3, 4, 5], size=n, replace=False)))


Painter = Callable[[np.random.Generator, Anatomy], tuple[np.ndarray, dict[str, object]]]


def _lungs(an: Anatomy) -> np.ndarray:
    return (an.organs == LUNG_L) | (an.organs == LUNG_R)


def _lobe_zone(
    rng: np.random.Generator, an: Anatomy, prefer: tuple[int, ...], p_prefer: float = 0.7
) -> tuple[np.ndarray, tuple[int, ...]]:
    present = [int(v) for v in np.unique(an.lobes) if v]
    pool = [v for v in prefer if v in present] if rng.random() < p_prefer else present
    pool = pool or present
    n = int(rng.integers(1, min(3, len(pool)) + 1))
    chosen = tuple(sorted(int(v) for v in rng.choice(pool, size=n, replace=False)))
    return np.isin(an.lobes, chosen) & _lungs(an), chosen


def _random_voxel(rng: np.random.Generator, mask: np.ndarray) -> tuple[int, int, int] | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    i = int(idx[rng.integers(idx.size)])
    x, y, z = np.unravel_index(i, mask.shape)
    return int(x), int(y), int(z)


def _eroded_lung(an: Anatomy, margin_mm: float) -> np.ndarray:
    """Lung voxels at least ``margin_mm`` from the lung border (box erosion: separable, hence fast)."""
    from scipy import ndimage

    size = [2 * max(1, int(round(margin_mm / s))) + 1 for s in an.space.spacing]
    return ndimage.minimum_filter(_lungs(an).view(np.uint8), size=size, mode="constant").astype(bool)


def _patch(
    rng: np.random.Generator, an: Anatomy, zone: np.ndarray, sigma_mm: float, fraction: float
) -> np.ndarray:
    """Patchy region: the highest ``fraction`` of a smooth random field within ``zone``."""
    sig = tuple(sigma_mm / s for s in an.space.spacing)
    field = smooth_noise(rng, zone.shape, sig)
    vals = field[zone]
    if vals.size == 0:
        return zone
    thr = np.quantile(vals, 1 - fraction)
    return zone & (field >= thr)


def paint_nodules(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    inner = _eroded_lung(an, 6.0)
    mask = np.zeros(an.organs.shape, dtype=bool)
    n = int(rng.choice([1, 1, 1, 2, 2, 3, 4]))
    sizes: list[float] = []
    lobes: list[int] = []
    kinds: list[str] = []
    for _ in range(n):
        c = _random_voxel(rng, inner)
        if c is None:
            break
        d = float(np.exp(rng.uniform(np.log(4.0), np.log(24.0))))
        radii = tuple(float(d / 2 * rng.uniform(0.8, 1.2)) for _ in range(3))
        sl, rho = ball_index(an.space, c, radii)  # type: ignore[arg-type]
        kind = str(rng.choice(["solid", "solid", "solid", "ground-glass", "part-solid"]))
        lung = _lungs(an)[sl]
        m = (rho <= 1) & lung
        if kind == "solid":
            val = rng.uniform(-10, 60)
            an.hu[sl][m] = val
        elif kind == "ground-glass":
            an.hu[sl][m] = np.maximum(an.hu[sl][m], rng.uniform(-650, -450))
        else:
            an.hu[sl][m] = np.where(rho[m] < 0.5, rng.uniform(0, 50), np.maximum(an.hu[sl][m], -550.0))
        mask[sl] |= m
        sizes.append(round(d))
        lobes.append(int(an.lobes[c]))
        kinds.append(kind)
    return mask, {
        "count": len(sizes),
        "size_mm": int(max(sizes)) if sizes else 0,
        "lobes": tuple(sorted(set(lobes))),
        "kind": kinds[0] if kinds else "solid",
    }


def paint_opacity(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    zone, chosen = _lobe_zone(rng, an, (2, 5, 4), 0.5)
    region = _patch(rng, an, zone, rng.uniform(5, 12), rng.uniform(0.06, 0.35))
    delta = rng.uniform(90, 330)
    an.hu[region] = np.minimum(an.hu[region] + delta, -250.0)
    return region, {"lobes": chosen, "kind": "ground-glass"}


def paint_consolidation(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    zone, chosen = _lobe_zone(rng, an, (2, 5), 0.7)
    region = _patch(rng, an, zone, rng.uniform(7, 14), rng.uniform(0.05, 0.3))
    air = an.hu < -980  # bronchial lumen stays dark: air bronchograms
    change = region & ~air
    an.hu[change] = rng.uniform(15, 45)
    return region, {"lobes": chosen}


def paint_atelectasis(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    lungs = _lungs(an)
    rim = an.info["effusion_rim"]
    assert isinstance(rim, np.ndarray)
    if rim.any() and rng.random() < 0.8:
        region = rim & lungs
        kind = "passive"
    elif rng.random() < 0.5:
        # dependent posterior basal band
        d_post = an.info["d_post"]
        assert isinstance(d_post, np.ndarray)
        zone, _ = _lobe_zone(rng, an, (2, 5), 0.9)
        region = zone & (d_post < rng.uniform(6, 18))
        kind = "dependent"
    else:
        # plate-like (subsegmental) atelectasis: a thin slab through a lower lobe
        zone, _ = _lobe_zone(rng, an, (2, 5, 4), 0.8)
        c = _random_voxel(rng, zone)
        region = np.zeros_like(lungs)
        if c is not None:
            normal = np.array([rng.normal(0, 0.3), rng.normal(0, 0.3), 1.0])
            normal /= np.linalg.norm(normal)
            radius = rng.uniform(18, 45)
            sl, rho = ball_index(an.space, c, (radius, radius, radius))
            gx, gy, gz = ((np.arange(s.start, s.stop) - c[i]) * an.space.spacing[i] for i, s in enumerate(sl))
            dist = np.abs(
                gx[:, None, None] * normal[0] + gy[None, :, None] * normal[1] + gz[None, None, :] * normal[2]
            )
            region[sl] = (rho <= 1) & (dist <= rng.uniform(2.5, 5.0)) & zone[sl]
        kind = "plate-like"
    an.hu[region] = rng.uniform(-150, 40) + 0.15 * (an.hu[region] + 850)
    lobes = tuple(sorted(int(v) for v in np.unique(an.lobes[region]) if v))
    return region, {"lobes": lobes, "kind": kind}


def paint_emphysema(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    lungs = _lungs(an)
    zone, chosen = _lobe_zone(rng, an, (1, 3), 0.75)
    kind = str(rng.choice(["centrilobular", "centrilobular", "paraseptal", "bullous"]))
    if kind == "bullous":
        region = np.zeros_like(lungs)
        for _ in range(int(rng.integers(1, 4))):
            c = _random_voxel(rng, zone)
            if c is None:
                break
            r = rng.uniform(8, 25)
            sl, rho = ball_index(an.space, c, (r, r, r))
            region[sl] |= (rho <= 1) & lungs[sl]
    else:
        fine = _patch(rng, an, zone, rng.uniform(2.0, 3.5), rng.uniform(0.04, 0.3))
        if kind == "paraseptal":
            fine &= ~_eroded_lung(an, 10.0)
        region = fine
    an.hu[region] = rng.uniform(-990, -945) + 0.1 * (an.hu[region] + 860)
    return region, {"lobes": chosen, "kind": kind}


def paint_fibrosis(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    zone, chosen = _lobe_zone(rng, an, (1, 3), 0.7)
    lungs = _lungs(an)
    region = np.zeros_like(lungs)
    centre = np.asarray(an.info["heart_centre"], dtype=float)
    for _ in range(int(rng.integers(2, 7))):
        c = (
            _random_voxel(rng, zone & ~_eroded_lung(an, 8.0))
            if rng.random() < 0.8
            else _random_voxel(rng, zone)
        )
        if c is None:
            break
        p0 = np.array([an.space.X[c], an.space.Y[c], an.space.Z[c]], dtype=float)
        towards = centre - p0
        towards /= np.linalg.norm(towards) or 1
        direction = towards + rng.normal(0, 0.5, 3)
        direction /= np.linalg.norm(direction)
        p1 = p0 + direction * rng.uniform(12, 40)
        r = rng.uniform(0.8, 2.2)
        res = segment(an.space, tuple(p0), tuple(p1), r + 2)  # type: ignore[arg-type]
        if res is None:
            continue
        sl, dist, _ = res
        region[sl] |= (dist <= max(r, 0.55 * min(an.space.spacing))) & lungs[sl]
    an.hu[region] = rng.uniform(-250, 20)
    return region, {"lobes": chosen}


def paint_mosaic(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    zone, chosen = _lobe_zone(rng, an, (1, 2, 3, 4, 5), 0.5)
    sig = tuple(rng.uniform(6, 10) / s for s in an.space.spacing)
    field = smooth_noise(rng, zone.shape, sig)
    amp = rng.uniform(35, 90)
    change = np.clip(field * 1.8, -1, 1) * amp
    region = zone & (np.abs(change) > 0.25 * amp)
    an.hu[region] += change[region]
    return region, {"lobes": chosen}


def paint_septal(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    zone, chosen = _lobe_zone(rng, an, (2, 5), 0.7)
    zone &= ~_eroded_lung(an, rng.uniform(15, 40))  # subpleural predominance
    sig = tuple(rng.uniform(4.0, 6.0) / s for s in an.space.spacing)
    field = smooth_noise(rng, zone.shape, sig)
    # zero level sets of a smooth field are sheets: in a slice they draw a polygonal reticulum
    width = 0.12 * min(2.0, max(an.space.spacing) / 1.5)
    region = zone & (np.abs(field) < width)
    an.hu[region] += rng.uniform(180, 420)
    return region, {"lobes": chosen}


def paint_lymphadenopathy(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    med = an.organs == MEDIASTINUM
    z_car = float(an.info["z_car"])  # type: ignore[arg-type]
    y_t = float(an.info["y_t"])  # type: ignore[arg-type]
    stations = {
        "right paratracheal": (14.0, y_t + 4, z_car + 22),
        "subcarinal": (-2.0, y_t - 14, z_car - 18),
        "aortopulmonary window": (-22.0, y_t + 8, z_car + 4),
        "prevascular": (2.0, y_t + 42, z_car + 10),
        "right hilar": (28.0, y_t - 6, z_car - 28),
        "left hilar": (-36.0, y_t - 10, z_car - 36),
    }
    names = list(stations)
    chosen = [names[i] for i in rng.choice(len(names), size=int(rng.integers(1, 4)), replace=False)]
    region = np.zeros_like(med)
    size = 0.0
    for st in chosen:
        p = stations[st]
        short = rng.uniform(10.5, 24.0)
        radii = (short / 2, short / 2 * rng.uniform(1.0, 1.4), short / 2 * rng.uniform(1.1, 1.7))
        c = an.space.index_of(p)  # type: ignore[arg-type]
        sl, rho = ball_index(an.space, c, radii)  # type: ignore[arg-type]
        # grow into the mediastinal fat only; lungs and vessels keep their shape
        m = (rho <= 1) & med[sl]
        if m.any():
            an.hu[sl][m] = rng.uniform(28, 48)
            region[sl] |= m
            size = max(size, short)
    return region, {"stations": tuple(chosen), "size_mm": int(round(size))}


def _spots(
    rng: np.random.Generator,
    an: Anatomy,
    centres: list[tuple[int, int, int]],
    organ: int,
    sizes: tuple[float, float],
) -> np.ndarray:
    region = np.zeros(an.organs.shape, dtype=bool)
    for c in centres:
        r = rng.uniform(*sizes)
        radii = (r, r, r * rng.uniform(1.0, 2.5))
        sl, rho = ball_index(an.space, c, radii)
        m = (rho <= 1) & (an.organs[sl] == organ)
        an.hu[sl][m] = np.maximum(an.hu[sl][m], rng.uniform(250, 1000))
        region[sl] |= m
    return region


def paint_coronary(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    hx, hy, hz = cast(Point, an.info["heart_centre"])
    rx, ry, rz = cast(Point, an.info["heart_radii"])
    ang = float(an.info["heart_angle"])  # type: ignore[arg-type]
    centres = []
    n = int(rng.integers(1, 10))
    for _ in range(n):
        # the coronaries run in the atrioventricular and interventricular grooves, on the upper surface
        theta = rng.uniform(0, 2 * np.pi)
        phi = rng.uniform(0.1, 0.7)
        u = 0.9 * np.array(
            [rx * np.cos(theta) * np.cos(phi), ry * np.sin(theta) * np.cos(phi), rz * np.sin(phi)]
        )
        x = hx + np.cos(ang) * u[0] - np.sin(ang) * u[1]
        y = hy + np.sin(ang) * u[0] + np.cos(ang) * u[1]
        centres.append(an.space.index_of((x, y, hz + u[2])))
    region = _spots(rng, an, centres, HEART, (1.0, 3.0))
    return region, {"count": n}


def paint_aortic(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    dist = an.info["aorta_dist"]
    assert isinstance(dist, np.ndarray)
    wall = (dist > 0.75) & (dist <= 1.0) & (an.organs == AORTA)
    n = int(rng.integers(1, 14))
    centres = [c for c in (_random_voxel(rng, wall) for _ in range(n)) if c is not None]
    region = _spots(rng, an, centres, AORTA, (1.0, 3.5))
    return region, {"count": n}


def paint_medical_material(rng: np.random.Generator, an: Anatomy) -> tuple[np.ndarray, dict[str, object]]:
    kind = str(rng.choice(["pacemaker", "port catheter", "sternotomy wires"]))
    body = an.organs > 0
    region = np.zeros_like(body)
    a_c, b_c, y_c = (float(an.info[k]) for k in ("a_c", "b_c", "y_c"))  # type: ignore[arg-type]
    hx, hy, hz = cast(Point, an.info["heart_centre"])
    z_car = float(an.info["z_car"])  # type: ignore[arg-type]
    metal = 3071.0

    def wire(points: list[tuple[float, float, float]], r: float) -> None:
        for p0, p1 in zip(points[:-1], points[1:], strict=True):
            res = segment(an.space, p0, p1, r + 2)
            if res is not None:
                sl, dist, _ = res
                region[sl] |= (dist <= max(r, 0.5 * min(an.space.spacing))) & body[sl]

    if kind == "sternotomy wires":
        for z in np.linspace(hz, z_car + 30, int(rng.integers(4, 8))):
            wire([(-14.0, y_c + b_c + 4, z), (0.0, y_c + b_c + 11, z + 1), (14.0, y_c + b_c + 4, z)], 0.8)
    else:
        side = -1.0 if kind == "pacemaker" else 1.0
        box = (side * 0.55 * a_c, y_c + b_c + 18, z_car + 40)
        c = an.space.index_of(box)
        size = (22.0, 24.0, 5.0) if kind == "pacemaker" else (12.0, 12.0, 7.0)
        sl, rho = ball_index(an.space, c, size)
        region[sl] |= (rho <= 1) & body[sl]
        svc = (18.0, y_c + 0.1 * b_c, z_car + 10)
        tip = (hx + 25, hy - 5, hz + 10) if kind == "pacemaker" else (20.0, y_c + 0.1 * b_c, hz + 30)
        wire([box, (side * 0.3 * a_c, y_c + 0.6 * b_c, z_car + 50), svc, tip], 1.0)
    an.hu[region] = metal
    return region, {"kind": kind}


#: Painters of intensity abnormalities, in painting order (background textures first, metal last).
PAINTERS: dict[str, Painter] = {
    "Emphysema": paint_emphysema,
    "Mosaic attenuation pattern": paint_mosaic,
    "Interlobular septal thickening": paint_septal,
    "Lung opacity": paint_opacity,
    "Consolidation": paint_consolidation,
    "Atelectasis": paint_atelectasis,
    "Pulmonary fibrotic sequela": paint_fibrosis,
    "Lung nodule": paint_nodules,
    "Lymphadenopathy": paint_lymphadenopathy,
    "Coronary artery wall calcification": paint_coronary,
    "Arterial wall calcification": paint_aortic,
    "Medical material": paint_medical_material,
}

__all__ = ["PAINTERS", "BODY", "sample_labels", "structural_from_labels"]
