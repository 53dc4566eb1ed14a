"""Chest phantom anatomy in HU with its organ label map (schema.ORGANS ids) and lobe map.

Shapes are implicit functions (ellipses, superellipses, tubes around polylines) evaluated on warped
coordinates, so every study has a plausible, different chest; nothing loops over voxels.
Abnormalities that change the anatomy itself (heart size, fluid collections, hernia, airway calibre)
are drawn here from a :class:`Structural` description; the others are painted later on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from exact_ct.synth.shapes import Point, Space, ellipsoid, segment, smooth_noise

# Organ ids (schema.ORGANS)
OUTSIDE, LUNG_L, LUNG_R, AIRWAY, PLEURA, HEART, AORTA, ESOPHAGUS, MEDIASTINUM, BODY = range(10)
#: Lobe codes of the internal lobe map (used to place lesions and to name lobes in reports).
LOBES = {
    1: "left upper lobe",
    2: "left lower lobe",
    3: "right upper lobe",
    4: "right middle lobe",
    5: "right lower lobe",
}


@dataclass
class Patient:
    """Body habitus of one patient (shared by all of the patient's studies)."""

    age: int
    sex: str
    half_width: float  # mm, body half-width (left-right)
    half_depth: float  # mm, body half-depth (antero-posterior)
    fat: float  # mm, subcutaneous fat
    muscle: float  # mm
    lung_height: float  # mm, diaphragm dome to apex


@dataclass
class Structural:
    """Abnormalities that change organ shapes; zero/empty means absent."""

    heart_scale: float = 1.0
    pericardial_effusion_mm: float = 0.0
    pleural_effusion: dict[str, tuple[float, float]] = field(
        default_factory=dict
    )  # side -> (thickness, height)
    hernia_radius_mm: float = 0.0
    hernia_air: bool = False
    bronchiectasis_lobes: tuple[int, ...] = ()
    bronchiectasis_factor: float = 1.0
    peribronchial_lobes: tuple[int, ...] = ()
    peribronchial_factor: float = 1.0


@dataclass
class Bronchus:
    p0: Point
    p1: Point
    radius: float
    wall: float
    lobe: int  # 0 for trachea / main bronchi
    depth: int


@dataclass
class Anatomy:
    hu: np.ndarray  # float32 HU before blur and noise
    organs: np.ndarray  # uint8 ids 0-9
    lobes: np.ndarray  # uint8 lobe codes (0 outside lungs)
    space: Space
    info: dict[str, object]
    lesions: dict[str, np.ndarray]  # structural lesion masks
    details: dict[str, dict[str, object]]  # per structural abnormality: facts for the report


def _superellipse(
    X: np.ndarray,
    Y: np.ndarray,
    a: np.ndarray | float,
    b: np.ndarray | float,
    yc: float = 0.0,
    p: float = 2.0,
) -> np.ndarray:
    """Level function of a rounded box (1 on the outline, < 1 inside); ``p`` > 2 makes it boxier.

    A blend of the p=2 and p=4 norms stands in for a true superellipse: only comparisons with 1 are
    needed, and integer powers are far cheaper than ``**`` with a fractional exponent on full volumes.
    """
    u = X / a
    u *= u
    v = (Y - yc) / b
    v *= v
    w = min(max((p - 2.0) / 2.0, 0.0), 1.0)
    if w == 0.0:
        return u + v
    return (1 - w) * (u + v) + w * (u * u + v * v)


def build_anatomy(
    rng: np.random.Generator, space: Space, patient: Patient, st: Structural, contrast: bool
) -> Anatomy:
    """Draw the chest: organs, HU and lobes, with the structural abnormalities of ``st``."""
    X, Y, Z = space.X, space.Y, space.Z
    shape = space.shape
    L = patient.lung_height
    a_b, b_b = patient.half_width, patient.half_depth
    # body: a rounded-box cross-section, a little wider at the shoulders
    shoulder = 1 + 0.07 * np.clip((Z - 0.7 * L) / (0.3 * L), 0, 1)
    f_body = _superellipse(X, Y, a_b * shoulder, b_b, p=2.3)
    body = f_body <= 1
    inner_fat = _superellipse(X, Y, a_b * shoulder - patient.fat, b_b - patient.fat, p=2.3) <= 1
    inner_muscle = (
        _superellipse(
            X, Y, a_b * shoulder - patient.fat - patient.muscle, b_b - patient.fat - patient.muscle, p=2.3
        )
        <= 1
    )

    # thoracic cavity: an ellipse inside the rib cage that narrows to the apices
    a_c = a_b - patient.fat - patient.muscle - 12.0
    b_c = b_b - patient.fat - patient.muscle - 12.0
    y_c = -0.05 * b_b
    z0 = 0.35 * L
    taper = np.sqrt(np.clip(1 - (np.clip(Z - z0, 0, None) / (L + 5 - z0)) ** 2, 0.0, 1.0))
    taper_safe = np.maximum(taper, 1e-3)
    f_cav = _superellipse(X, Y, a_c * taper_safe, b_c * taper_safe, yc=y_c, p=2.1)
    rib_band = (_superellipse(X, Y, a_c + 10.0, b_c + 10.0, yc=y_c, p=2.1) <= 1) & (f_cav > 1) & inner_muscle

    # spine: vertebral body just behind the cavity, with the paraspinal gutter excluded from the lungs
    r_v = rng.uniform(15.0, 19.0)
    y_s = y_c - 0.8 * b_c
    spine_r = np.sqrt(X**2 + (Y - y_s) ** 2)
    vertebra = spine_r <= r_v
    posterior_el = _superellipse(X, Y - (y_s - r_v - 16), 22.0, 16.0) <= 1
    canal = np.sqrt(X**2 + (Y - (y_s - r_v - 7)) ** 2) <= 7.0
    paraspinal = (np.abs(X) < r_v + 14) & (Y < y_s + r_v + 4)
    cavity = (f_cav <= 1) & ~paraspinal & ~vertebra

    # diaphragm: two domes, the left lower; posterior recesses reach deeper
    left_drop = rng.uniform(8.0, 22.0)
    rel_y = (Y - y_c) / b_c
    z_d = (
        -45.0 * ((np.abs(X) - 0.45 * a_c) / (0.55 * a_c)) ** 2
        - 35.0 * np.clip(-rel_y, 0, 1) ** 2
        - 15.0 * np.clip(rel_y, 0, 1) ** 2
        - np.where(X < 0, left_drop, 0.0)
    ).astype(np.float32)
    thorax = cavity & (Z > z_d)
    abdomen = cavity & (Z <= z_d)

    # landmarks (frame mm)
    z_car = 0.5 * L + rng.uniform(-10, 10)
    y_e = y_s + r_v + 10.0
    y_t = y_e + 19.0
    x_m = -6.0 + rng.uniform(-4, 4)
    scale_x, scale_y, scale_z = a_c / 125.0, b_c / 100.0, L / 220.0

    # mediastinum zone and heart
    width = 14.0 + 15.0 * np.exp(-(((Y - y_c + 0.1 * b_c) / (0.5 * b_c)) ** 2))
    med_zone = thorax & (np.abs(X - x_m) < width)
    hr = np.array(
        [rng.uniform(50, 58) * scale_x, rng.uniform(40, 47) * scale_y, rng.uniform(48, 56) * scale_z]
    )
    hr_eff = hr * st.heart_scale
    hx = -0.2 * a_c + rng.uniform(-6, 6) - (st.heart_scale - 1) * 25
    hy = y_c + 0.3 * b_c
    z_dh = -45.0 * ((abs(hx) - 0.45 * a_c) / (0.55 * a_c)) ** 2 - left_drop * (hx < 0)
    hz = z_dh + 0.8 * hr_eff[2]
    angle = np.deg2rad(rng.uniform(20, 40))
    heart_centre = (float(hx), float(hy), float(hz))

    organs = np.zeros(shape, dtype=np.uint8)
    organs[body] = BODY
    organs[thorax & (X < x_m)] = LUNG_L
    organs[thorax & (X >= x_m)] = LUNG_R
    organs[med_zone] = MEDIASTINUM

    hu = np.full(shape, -1000.0, dtype=np.float32)
    fat_tex = smooth_noise(rng, shape, (2.0, 2.0, 1.5))
    hu[body] = -100.0 + 12.0 * fat_tex[body]
    hu[inner_fat & ~inner_muscle] = 45.0
    hu[inner_muscle] = 40.0  # intercostal and deep muscle, overwritten inside the cavity
    # ribs: oblique bands, sloping down anteriorly
    pitch = rng.uniform(24.0, 30.0)
    phase = ((Z + 0.45 * (Y - y_c) + rng.uniform(0, pitch)) / pitch) % 1.0
    ribs = rib_band & (phase < 0.33) & (Z > -60)
    hu[ribs] = 380.0 + 80.0 * fat_tex[ribs]
    hu[abdomen] = 50.0 + 8.0 * fat_tex[abdomen]
    # a gastric bubble under the left dome
    gas = abdomen & (X < -0.3 * a_c) & (Z > z_d - 25) & (Y > y_c - 0.2 * b_c) & (rng.random() < 0.6)
    hu[gas] = -1000.0
    # spine with discs
    disc = ((Z / rng.uniform(26, 31)) % 1.0) < 0.2
    hu[posterior_el & body] = 420.0
    hu[vertebra] = np.where(disc[vertebra], 80.0, np.where(spine_r[vertebra] > r_v - 2.5, 520.0, 230.0))
    hu[canal] = 15.0
    # sternum
    sternum = (
        (np.abs(X - x_m * 0.3) < 14)
        & (Y > y_c + b_c * 0.92)
        & (Y < y_c + b_c + 12)
        & (Z > 0.0)
        & (Z < 0.85 * L)
        & body
    )
    hu[sternum] = 330.0

    # lung parenchyma: inspiration level, dependent density gradient, fine texture
    lung_base = rng.uniform(-885.0, -815.0)
    lung_tex = smooth_noise(rng, shape, (1.0, 1.0, 1.0))
    lungs = (organs == LUNG_L) | (organs == LUNG_R)
    gradient = 60.0 * np.clip(-rel_y, 0, 1) ** 2
    hu[lungs] = (lung_base + gradient + 10.0 * lung_tex)[lungs]
    hu[med_zone] = -95.0 + 15.0 * fat_tex[med_zone]

    # heart with epicardial fat, pericardial effusion shell
    res = ellipsoid(space, heart_centre, tuple(hr_eff), angle, reach=st.pericardial_effusion_mm + 8)
    assert res is not None
    sl, rho = res
    above = Z[sl] > z_d[sl] - 3
    grow = (st.pericardial_effusion_mm + 4.0) / float(hr_eff.mean())
    fat_pad = (rho <= 1 + grow) & above & thorax[sl]
    organs[sl][fat_pad] = MEDIASTINUM
    hu[sl][fat_pad] = -90.0
    heart = (rho <= 1) & above
    organs[sl][heart] = HEART
    blood = rng.uniform(130, 220) if contrast else rng.uniform(35, 48)
    hu[sl][heart] = np.where(rho[heart] > 0.85, 45.0, blood)
    lesions: dict[str, np.ndarray] = {}
    details: dict[str, dict[str, object]] = {}
    if st.heart_scale > 1.0:
        m = np.zeros(shape, dtype=bool)
        m[sl] = heart
        lesions["Cardiomegaly"] = m
        details["Cardiomegaly"] = {"ctr": round(0.45 * st.heart_scale, 2)}
    if st.pericardial_effusion_mm > 0:
        shell = (
            (rho > 1)
            & (rho <= 1 + st.pericardial_effusion_mm / float(hr_eff.mean()))
            & above
            & (thorax[sl] | (organs[sl] > 0))
        )
        organs[sl][shell] = HEART
        hu[sl][shell] = rng.uniform(0.0, 20.0)
        m = np.zeros(shape, dtype=bool)
        m[sl] = shell
        lesions["Pericardial effusion"] = m
        details["Pericardial effusion"] = {"mm": int(round(st.pericardial_effusion_mm))}

    # aorta: ascending, arch, descending (older patients: wider)
    r_asc = rng.uniform(13, 16) + 0.05 * max(patient.age - 50, 0)
    r_desc = rng.uniform(10, 12.5) + 0.03 * max(patient.age - 50, 0)
    z_arch = z_car + rng.uniform(22, 34)
    aorta_pts: list[tuple[Point, float]] = [
        ((hx + 0.35 * hr_eff[0], hy + 0.1 * hr_eff[1], hz + 0.45 * hr_eff[2]), r_asc),
        ((12.0, y_t + 30.0, z_car - 5), r_asc),
        ((2.0, y_t + 12.0, z_arch), 0.5 * (r_asc + r_desc)),
        ((-20.0, y_t - 8.0, z_arch - 8), r_desc),
        ((-24.0, y_s + r_v + 10.0, z_car - 40), r_desc),
        ((-18.0, y_s + r_v + 14.0, -90.0), r_desc),
    ]
    aorta = np.zeros(shape, dtype=bool)
    aorta_dist = np.full(shape, np.inf, dtype=np.float32)  # normalised radial position (1 = wall)
    for (p0, r0), (p1, r1) in zip(aorta_pts[:-1], aorta_pts[1:], strict=True):
        res2 = segment(space, p0, p1, max(r0, r1) + 2)
        if res2 is None:
            continue
        s2, dist, t = res2
        rnorm = dist / (r0 + (r1 - r0) * t)
        aorta_dist[s2] = np.minimum(aorta_dist[s2], rnorm)
    aorta = (aorta_dist <= 1) & body & ~vertebra
    organs[aorta] = AORTA
    hu[aorta] = rng.uniform(180, 320) if contrast else rng.uniform(35, 48)

    # esophagus, trachea and bronchi
    esophagus = np.zeros(shape, dtype=bool)
    eso_pts = [
        (0.0 - 2, y_e, float(space.z1[-1]) + 40),
        (-4.0, y_e, z_car),
        (-14.0, y_e + 6, -5.0),
        (-30.0, y_e + 14, -45.0),
    ]
    r_e = rng.uniform(7, 10)
    eso_air = rng.random() < 0.4
    for p0, p1 in zip(eso_pts[:-1], eso_pts[1:], strict=True):
        res2 = segment(space, p0, p1, r_e + 2)
        if res2 is None:
            continue
        s2, dist, _ = res2
        m = (dist <= r_e) & body[s2] & ~aorta[s2] & ~vertebra[s2]
        esophagus[s2] |= m
        hu[s2][m] = np.where(eso_air & (dist[m] < 2.0), -900.0, 38.0)
    organs[esophagus] = ESOPHAGUS

    tree = _airway_tree(rng, (x_m + 4, y_t, z_car), (scale_x, scale_y, scale_z), float(space.z1[-1]) + 40, st)
    airway_lesion: dict[str, np.ndarray] = {}
    for b in tree:
        res2 = segment(space, b.p0, b.p1, b.radius + b.wall + 2)
        if res2 is None:
            continue
        s2, dist, _ = res2
        outer = dist <= b.radius + b.wall
        if b.depth == 0:
            m = outer & body[s2]
            organs[s2][m] = AIRWAY
        else:
            m = outer & ((organs[s2] == LUNG_L) | (organs[s2] == LUNG_R) | (organs[s2] == AIRWAY))
        hu[s2][m] = np.where(dist[m] <= b.radius, -1000.0, 30.0)
        for name, affected_lobes, kind in (
            ("Bronchiectasis", st.bronchiectasis_lobes, "outer"),
            ("Peribronchial thickening", st.peribronchial_lobes, "wall"),
        ):
            if b.lobe in affected_lobes and b.depth >= 1:
                mask = m & (dist > b.radius) if kind == "wall" else m
                acc = airway_lesion.setdefault(name, np.zeros(shape, dtype=bool))
                acc[s2] |= mask

    # pulmonary vessels along the bronchi (arteries) and from the left atrium (veins)
    blood_pa = rng.uniform(150, 260) if contrast else 40.0
    vessels = _vessel_tree(rng, tree, heart_centre, hr_eff, (scale_x, scale_y, scale_z))
    for p0, p1, r in vessels:
        res2 = segment(space, p0, p1, r + 2)
        if res2 is None:
            continue
        s2, dist, _ = res2
        in_lung = (organs[s2] == LUNG_L) | (organs[s2] == LUNG_R)
        in_med = organs[s2] == MEDIASTINUM
        core = dist <= r
        # partial volume: a soft edge so thin vessels stay visible at coarse pixels
        w = np.clip((r + 0.7 - dist) / 1.4, 0, 1)
        m = (w > 0) & in_lung
        hu[s2][m] = hu[s2][m] * (1 - w[m]) + blood_pa * w[m]
        hu[s2][core & in_med] = blood_pa

    # lobes: oblique fissure (both lungs) and horizontal fissure (right)
    lobes = np.zeros(shape, dtype=np.uint8)
    z_post = z_car + rng.uniform(10, 30)
    zf = z_post + (Y - (y_c - b_c)) * (-10.0 - z_post) / (1.8 * b_c)
    lower = Z < zf
    z_h = z_car - rng.uniform(20, 40)
    lungs = (organs == LUNG_L) | (organs == LUNG_R)
    left = lungs & (X < x_m)
    right = lungs & (X >= x_m)
    lobes[left] = np.where(lower[left], 2, 1)
    lobes[right] = np.where(lower[right], 5, np.where(Z[right] < z_h, 4, 3))
    fissure = lungs & (
        (np.abs(Z - zf) < 0.6 * space.spacing[2])
        | (right & ~lower & (np.abs(Z - z_h) < 0.6 * space.spacing[2]))
    )
    hu[fissure] += 60.0

    # pleura: a thin shell (one voxel, >= 3 mm) just outside each lung along its costal and diaphragmatic
    # surfaces: the lungs reach the chest wall as TotalSegmentator's do, and the shell is the parietal
    # pleura / endothoracic layer, soft tissue, where an effusion would lie. The mediastinal surface is
    # mediastinum, not pleura.
    d_p = max(3.0, 1.05 * max(space.spacing[0], space.spacing[1]))
    d_pz = max(3.0, 1.05 * space.spacing[2])
    scaled = tuple(s / d for s, d in zip(space.spacing, (d_p, d_p, d_pz), strict=True))
    near_lung = ndimage.distance_transform_edt(~lungs, sampling=scaled) <= 1.0
    pleura = near_lung & ~lungs & body & np.isin(organs, (BODY,)) & ~vertebra & ~canal
    organs[pleura] = PLEURA
    hu[pleura] = 0.6 * hu[pleura] + 0.4 * 20.0

    # pleural effusion: dependent fluid between lung and chest wall, converting lung to pleura
    y_back = y_c - b_c * taper_safe * np.sqrt(np.clip(1 - (X / (a_c * taper_safe)) ** 2, 0, 1))
    d_post = Y - y_back
    rim = np.zeros(shape, dtype=bool)
    if st.pleural_effusion:
        fluid = np.zeros(shape, dtype=bool)
        for side, (thick, height) in st.pleural_effusion.items():
            side_mask = (X < x_m) if side == "left" else (X >= x_m)
            profile = np.clip(1 - (Z - z_d) / height, 0, 1) ** 0.7
            cand = side_mask & ((organs == LUNG_L) | (organs == LUNG_R) | (organs == PLEURA)) & thorax
            depth = thick * profile
            fluid |= cand & ((d_post < depth) | ((Z - z_d) < 0.3 * depth))
            rim |= cand & (d_post >= depth) & (d_post < depth + 12) & (profile > 0)
        organs[fluid] = PLEURA
        hu[fluid] = rng.uniform(2.0, 22.0)
        lesions["Pleural effusion"] = fluid
        rim &= ~fluid
        sides = sorted(st.pleural_effusion)
        details["Pleural effusion"] = {
            "side": "bilateral" if len(sides) == 2 else sides[0],
            "mm": int(round(max(t for t, _ in st.pleural_effusion.values()))),
        }
    lobes[(organs != LUNG_L) & (organs != LUNG_R)] = 0

    # hiatal hernia: stomach above the hiatus, with an air-fluid level when it holds air
    if st.hernia_radius_mm > 0:
        r = st.hernia_radius_mm
        centre = (-20.0, y_e + 10.0, -30.0 + 0.55 * r)
        res = ellipsoid(space, centre, (r, 0.85 * r, 0.8 * r), 0.3)
        assert res is not None
        sl, rho = res
        o = organs[sl]
        hernia = (
            (rho <= 1) & np.isin(o, (LUNG_L, LUNG_R, PLEURA, MEDIASTINUM, ESOPHAGUS)) & (Z[sl] > z_d[sl] - 2)
        )
        o[hernia] = ESOPHAGUS
        level = centre[2] + rng.uniform(-0.1, 0.4) * r
        inside = hernia & (rho < 0.8)
        hu[sl][hernia] = 40.0
        hu[sl][inside] = 15.0
        if st.hernia_air:
            hu[sl][inside & (Z[sl] > level)] = -1000.0
        m = np.zeros(shape, dtype=bool)
        m[sl] = hernia
        lesions["Hiatal hernia"] = m
        details["Hiatal hernia"] = {"mm": int(round(2 * r))}
    for name, acc in airway_lesion.items():
        acc &= np.isin(organs, (LUNG_L, LUNG_R, AIRWAY))
        lesions[name] = acc
        affected = st.bronchiectasis_lobes if name == "Bronchiectasis" else st.peribronchial_lobes
        details[name] = {"lobes": tuple(affected)}

    info: dict[str, object] = {
        "a_c": a_c,
        "b_c": b_c,
        "y_c": y_c,
        "x_m": x_m,
        "z_car": z_car,
        "y_t": y_t,
        "y_s": y_s,
        "r_v": r_v,
        "heart_centre": heart_centre,
        "heart_radii": tuple(float(v) for v in hr_eff),
        "heart_angle": float(angle),
        "aorta_pts": aorta_pts,
        "aorta_dist": aorta_dist,
        "tree": tree,
        "d_post": d_post,
        "z_d": z_d,
        "effusion_rim": rim,
        "contrast": contrast,
        "lung_base": lung_base,
        "body": body,
        "inner_fat": inner_fat,
        "inner_muscle": inner_muscle,
    }
    return Anatomy(hu, organs, lobes, space, info, lesions, details)


def _airway_tree(
    rng: np.random.Generator, carina: Point, scale: Point, z_top: float, st: Structural
) -> list[Bronchus]:
    """Trachea, main bronchi (depth 0), lobar bronchi (depth 1) and two generations beyond."""
    sx, sy, sz = scale
    cx, cy, cz = carina
    r_t = rng.uniform(7.5, 10.0)
    out = [Bronchus((cx, cy + 3, z_top), carina, r_t, rng.uniform(1.2, 2.0), 0, 0)]
    rh = (cx + 30 * sx, cy - 8 * sy, cz - 22 * sz)
    lh = (cx - 42 * sx, cy - 12 * sy, cz - 35 * sz)
    out.append(Bronchus(carina, rh, 0.72 * r_t, 1.3, 0, 0))
    out.append(Bronchus(carina, lh, 0.66 * r_t, 1.3, 0, 0))
    ri = (cx + 38 * sx, cy - 12 * sy, cz - 45 * sz)
    lobar = [
        (rh, (cx + 78 * sx, cy + 5 * sy, cz + 8 * sz), 3),
        (ri, (cx + 62 * sx, cy + 50 * sy, cz - 75 * sz), 4),
        (ri, (cx + 62 * sx, cy - 28 * sy, cz - 115 * sz), 5),
        (lh, (cx - 82 * sx, cy + 25 * sy, cz + 2 * sz), 1),
        (lh, (cx - 62 * sx, cy - 30 * sy, cz - 112 * sz), 2),
    ]
    out.append(Bronchus(rh, ri, 0.45 * r_t, 1.1, 5, 1))
    for p0, p1, lobe in lobar:
        jitter = rng.normal(0, 6, 3)
        p1 = (p1[0] + jitter[0], p1[1] + jitter[1], p1[2] + jitter[2])
        _grow(rng, out, p0, p1, 0.42 * r_t, lobe, 1, st)
    return out


def _grow(
    rng: np.random.Generator,
    out: list[Bronchus],
    p0: Point,
    p1: Point,
    radius: float,
    lobe: int,
    depth: int,
    st: Structural,
) -> None:
    factor = 1.0
    wall = max(0.9, 0.22 * radius)
    if lobe in st.bronchiectasis_lobes:
        factor = st.bronchiectasis_factor if depth >= 2 else 1 + 0.4 * (st.bronchiectasis_factor - 1)
    if lobe in st.peribronchial_lobes:
        wall *= st.peribronchial_factor
    out.append(Bronchus(p0, p1, radius * factor, wall, lobe, depth))
    if depth >= 3:
        return
    d = np.subtract(p1, p0)
    length = float(np.linalg.norm(d)) or 1.0
    for _ in range(2):
        direction = d / length + rng.normal(0, 0.45, 3)
        direction /= np.linalg.norm(direction)
        child = tuple(float(v) for v in np.add(p1, direction * length * rng.uniform(0.45, 0.65)))
        _grow(rng, out, p1, child, radius * 0.7, lobe, depth + 1, st)  # type: ignore[arg-type]


def _vessel_tree(
    rng: np.random.Generator, tree: list[Bronchus], heart: Point, hr: np.ndarray, scale: Point
) -> list[tuple[Point, Point, float]]:
    """Pulmonary arteries beside each bronchus (one generation further) and a few veins to the atrium."""
    out: list[tuple[Point, Point, float]] = []
    for b in tree:
        if b.depth == 0:
            continue
        offset = rng.normal(0, 1, 3)
        offset *= (b.radius + b.wall + 1.5) / np.linalg.norm(offset)
        p0 = tuple(float(v) for v in np.add(b.p0, offset))
        p1 = tuple(float(v) for v in np.add(b.p1, offset))
        out.append((p0, p1, max(1.2, 1.1 * b.radius)))  # type: ignore[arg-type]
        if b.depth == 3:
            d = np.subtract(p1, p0)
            for _ in range(2):
                direction = d / (np.linalg.norm(d) or 1) + rng.normal(0, 0.5, 3)
                tip = tuple(float(v) for v in np.add(p1, direction * np.linalg.norm(d) * 0.8))
                out.append((p1, tip, 1.0))  # type: ignore[arg-type]
    atrium = (heart[0] + 5, heart[1] - 0.6 * hr[1], heart[2] + 0.35 * hr[2])
    for side in (-1, 1):
        for dz in (-30.0, 10.0):
            tip = (
                side * 85 * scale[0],
                atrium[1] - 10 * scale[1] + rng.normal(0, 10),
                atrium[2] + dz * scale[2] + rng.normal(0, 8),
            )
            mid = tuple(0.5 * (a + b) for a, b in zip(atrium, tip, strict=True))
            out.append((atrium, mid, 5.0))  # type: ignore[arg-type]
            out.append((mid, tip, 3.0))  # type: ignore[arg-type]
    return out
