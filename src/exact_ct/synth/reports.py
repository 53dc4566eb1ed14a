"""Free-text chest CT reports for synthetic studies, with negations, hedges, synonyms and label noise.

A report states each present finding (with laterality, lobes and sizes from the phantom), hedges a few
("possible", "cannot be excluded"), leaves out a share (``label_noise``), and negates some absent ones.
What the text actually says is recorded per abnormality: 1 stated, -1 hedged, 0 negated, None silent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np

from exact_ct.schema import ABNORMALITIES
from exact_ct.synth.anatomy import LOBES

Facts = dict[str, object]


@dataclass(frozen=True)
class SyntheticReport:
    """What a synthetic radiologist wrote, and what the text says per abnormality.

    Attributes:
        findings: the findings section (paragraphs, with section headers in about 60 % of reports).
        impression: one line, or numbered lines when several findings are stated or hedged.
        reported_labels: per abnormality, 1 stated, -1 hedged, 0 negated, None silent.
        noise_events: (abnormality, "omitted" | "hedged") for each present finding not stated plainly.
    """

    findings: str
    impression: str
    reported_labels: dict[str, int | None]
    noise_events: list[tuple[str, str]]


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def lobe_phrase(lobes: object) -> str:
    codes = sorted({int(v) for v in lobes}) if isinstance(lobes, tuple | list) else []  # type: ignore[union-attr]
    if not codes:
        return "both lungs"
    s = set(codes)
    if s == {1, 2, 3, 4, 5}:
        return "both lungs"
    if s == {2, 5}:
        return "both lower lobes"
    if s == {1, 3}:
        return "both upper lobes"
    if s <= {1, 2} and len(s) == 2:
        return "the left lung"
    if s <= {3, 4, 5} and len(s) == 3:
        return "the right lung"
    names = [LOBES[c] for c in codes]
    if len(names) == 1:
        return f"the {names[0]}"
    return "the " + ", ".join(names[:-1]) + " and " + names[-1]


def _size(facts: Facts, key: str = "size_mm") -> int:
    v = facts.get(key, 0)
    return int(v) if isinstance(v, int | float) else 0


def _present(rng: np.random.Generator, name: str, f: Facts) -> str:
    """A sentence stating a present finding, with the phantom's facts."""
    where = lobe_phrase(f.get("lobes"))
    if name == "Medical material":
        kind = f.get("kind")
        if kind == "pacemaker":
            return _pick(
                rng,
                [
                    "A cardiac pacemaker is seen in the left anterior chest wall, with its lead extending into the right heart.",
                    "Pacemaker generator in the left pectoral region with leads in the right cardiac chambers.",
                ],
            )
        if kind == "port catheter":
            return _pick(
                rng,
                [
                    "A port catheter is noted in the right anterior chest wall with its tip at the cavoatrial junction.",
                    "Right-sided venous port device with catheter tip projecting over the superior vena cava.",
                ],
            )
        return _pick(
            rng,
            [
                "Median sternotomy wires are noted.",
                "Postoperative changes of median sternotomy with intact sternal wires.",
            ],
        )
    if name == "Arterial wall calcification":
        return _pick(
            rng,
            [
                "Calcified atherosclerotic plaques are observed in the wall of the thoracic aorta.",
                "Atherosclerotic calcifications are seen along the aortic arch and descending aorta.",
                "There are scattered calcifications in the thoracic aortic wall.",
            ],
        )
    if name == "Coronary artery wall calcification":
        return _pick(
            rng,
            [
                "Calcified plaques are seen in the coronary arteries.",
                "Coronary artery calcifications are present.",
                "Atherosclerotic calcification of the coronary arteries is noted.",
            ],
        )
    if name == "Cardiomegaly":
        return _pick(
            rng,
            [
                "The heart is enlarged (cardiomegaly).",
                f"Cardiomegaly is present, with a cardiothoracic ratio of about {f.get('ctr', 0.55)}.",
                "Heart size is increased.",
            ],
        )
    if name == "Pericardial effusion":
        return _pick(
            rng,
            [
                f"Pericardial effusion measuring up to {_size(f, 'mm')} mm in thickness is observed.",
                f"There is a pericardial effusion with a maximum depth of {_size(f, 'mm')} mm.",
            ],
        )
    if name == "Hiatal hernia":
        return _pick(
            rng,
            [
                "A sliding hiatal hernia is present.",
                f"A hiatal hernia measuring about {_size(f, 'mm')} mm is seen.",
                "The gastroesophageal junction is displaced above the diaphragm, consistent with a hiatal hernia.",
            ],
        )
    if name == "Lymphadenopathy":
        stations = cast("tuple[str, ...]", f.get("stations") or ("mediastinal",))
        st = " and ".join(str(s) for s in stations)
        return _pick(
            rng,
            [
                f"Enlarged lymph nodes are seen in the {st} region, the largest with a short axis of {_size(f)} mm.",
                f"Mediastinal lymphadenopathy ({st}), largest node {_size(f)} mm in short axis.",
            ],
        )
    if name == "Emphysema":
        kind = f.get("kind", "centrilobular")
        if kind == "bullous":
            return f"Bullous emphysematous changes are observed in {where}."
        return _pick(
            rng,
            [
                f"{str(kind).capitalize()} emphysema is seen, most pronounced in {where}.",
                f"There are {kind} emphysematous changes in {where}.",
            ],
        )
    if name == "Atelectasis":
        kind = f.get("kind")
        if kind == "passive":
            return f"Passive atelectasis is observed in the lung parenchyma adjacent to the fluid in {where}."
        if kind == "plate-like":
            return _pick(
                rng,
                [
                    f"Plate-like atelectasis is seen in {where}.",
                    f"Subsegmental linear atelectasis in {where}.",
                ],
            )
        return f"Dependent atelectatic changes are seen in {where}."
    if name == "Lung nodule":
        n = _size(f, "count")
        kind = {"solid": "solid", "ground-glass": "non-solid", "part-solid": "part-solid"}.get(
            str(f.get("kind")), "solid"
        )
        if n > 1:
            return _pick(
                rng,
                [
                    f"Multiple pulmonary nodules are present in {where}, the largest measuring {_size(f)} mm.",
                    f"There are {n} nodules in {where}; the largest is {_size(f)} mm.",
                ],
            )
        return _pick(
            rng,
            [
                f"A {_size(f)} mm {kind} nodule is seen in {where}.",
                f"There is a {kind} pulmonary nodule measuring {_size(f)} mm in {where}.",
            ],
        )
    if name == "Lung opacity":
        return _pick(
            rng,
            [
                f"Patchy ground-glass opacities are observed in {where}.",
                f"There are areas of ground glass density in {where}.",
                f"Ill-defined opacities are seen in {where}.",
            ],
        )
    if name == "Pulmonary fibrotic sequela":
        return _pick(
            rng,
            [
                f"Fibrotic bands are seen in {where}.",
                f"Sequelae fibrotic changes are present in {where}.",
                f"Linear parenchymal scarring is noted in {where}.",
            ],
        )
    if name == "Pleural effusion":
        side = f.get("side", "right")
        mm = _size(f, "mm")
        if side == "bilateral":
            return f"Bilateral pleural effusion is observed, measuring up to {mm} mm in thickness."
        return _pick(
            rng,
            [
                f"There is a {side} pleural effusion measuring {mm} mm at its thickest.",
                f"{str(side).capitalize()}-sided pleural fluid is seen, about {mm} mm thick.",
            ],
        )
    if name == "Mosaic attenuation pattern":
        return _pick(
            rng,
            [
                f"A mosaic attenuation pattern is seen in {where}.",
                f"Heterogeneous lung density with mosaic attenuation in {where}.",
            ],
        )
    if name == "Peribronchial thickening":
        return _pick(
            rng,
            [
                f"Peribronchial thickening is observed in {where}.",
                f"Peribronchial wall thickening is noted in {where}.",
            ],
        )
    if name == "Consolidation":
        return _pick(
            rng,
            [
                f"Consolidation with air bronchograms is present in {where}.",
                f"An area of consolidation is seen in {where}.",
            ],
        )
    if name == "Bronchiectasis":
        return _pick(
            rng,
            [
                f"Cylindrical bronchiectasis is seen in {where}.",
                f"Bronchiectatic changes are observed in {where}.",
            ],
        )
    if name == "Interlobular septal thickening":
        return _pick(
            rng,
            [
                f"Interlobular septal thickening is seen in {where}.",
                f"Thickened interlobular septa are noted in {where}.",
            ],
        )
    raise KeyError(name)


_HEDGED: dict[str, tuple[str, ...]] = {
    "Medical material": ("A tubular density in the chest wall may represent a medical device.",),
    "Arterial wall calcification": ("Possible minimal calcification of the aortic wall.",),
    "Coronary artery wall calcification": ("Possible mild coronary artery calcification.",),
    "Cardiomegaly": ("The heart is at the upper limit of normal; mild cardiomegaly cannot be excluded.",),
    "Pericardial effusion": ("Possible minimal pericardial effusion.",),
    "Hiatal hernia": ("A small hiatal hernia cannot be excluded.",),
    "Lymphadenopathy": ("Borderline lymph nodes are seen; early lymphadenopathy cannot be excluded.",),
    "Emphysema": ("Possible mild emphysema in {where}.",),
    "Atelectasis": ("Findings in {where} may represent atelectasis.",),
    "Lung nodule": ("A tiny density in {where} is suspicious for a nodule; follow-up is recommended.",),
    "Lung opacity": ("Questionable faint ground-glass opacity in {where}.",),
    "Pulmonary fibrotic sequela": ("Linear densities in {where} may represent fibrotic sequelae.",),
    "Pleural effusion": ("Possible trace pleural effusion.",),
    "Mosaic attenuation pattern": ("Subtle heterogeneity suggestive of mosaic attenuation in {where}.",),
    "Peribronchial thickening": ("Questionable peribronchial thickening in {where}.",),
    "Consolidation": ("Density in {where} suspicious for early consolidation.",),
    "Bronchiectasis": ("Mildly dilated airways in {where}, possibly bronchiectasis.",),
    "Interlobular septal thickening": ("Possible interlobular septal thickening in {where}.",),
}

_NEGATED: dict[str, tuple[str, ...]] = {
    "Medical material": ("No medical device or foreign material is seen.",),
    "Arterial wall calcification": (
        "No calcified atherosclerotic plaque is seen in the thoracic aorta.",
        "No aortic wall calcification.",
    ),
    "Coronary artery wall calcification": (
        "No coronary artery calcification is seen.",
        "Coronary arteries show no calcification.",
    ),
    "Cardiomegaly": (
        "Heart size is normal.",
        "The heart is not enlarged.",
        "Heart contour and size are normal.",
    ),
    "Pericardial effusion": (
        "No pericardial effusion or thickening was observed.",
        "Pericardial effusion was not detected.",
    ),
    "Hiatal hernia": ("No hiatal hernia.", "No hiatal hernia is seen."),
    "Lymphadenopathy": (
        "No enlarged lymph nodes are seen in the mediastinum or hila.",
        "No mediastinal or hilar lymphadenopathy.",
    ),
    "Emphysema": ("No emphysema.", "There is no emphysematous change."),
    "Atelectasis": ("No atelectasis.", "There is no atelectasis."),
    "Lung nodule": ("No pulmonary nodule is detected.", "No nodular lesion is seen in the lung parenchyma."),
    "Lung opacity": ("No ground-glass opacity.", "No infiltrative opacity is seen."),
    "Pulmonary fibrotic sequela": ("No fibrotic changes.", "There is no parenchymal scarring."),
    "Pleural effusion": ("No pleural effusion.", "Pleural effusion was not detected."),
    "Mosaic attenuation pattern": ("No mosaic attenuation.",),
    "Peribronchial thickening": ("No peribronchial thickening.",),
    "Consolidation": ("No consolidation.", "There is no focal consolidation."),
    "Bronchiectasis": ("No bronchiectasis.",),
    "Interlobular septal thickening": ("No interlobular septal thickening.",),
}

_IMPRESSION: dict[str, str] = {
    "Medical material": "Medical device in place ({kind}).",
    "Arterial wall calcification": "Aortic atherosclerotic calcification.",
    "Coronary artery wall calcification": "Coronary artery calcification.",
    "Cardiomegaly": "Cardiomegaly.",
    "Pericardial effusion": "Pericardial effusion.",
    "Hiatal hernia": "Hiatal hernia.",
    "Lymphadenopathy": "Mediastinal lymphadenopathy.",
    "Emphysema": "Emphysema.",
    "Atelectasis": "Atelectasis in {where}.",
    "Lung nodule": "Pulmonary nodule(s), largest {size} mm; follow-up recommended.",
    "Lung opacity": "Ground-glass opacities in {where}.",
    "Pulmonary fibrotic sequela": "Fibrotic sequelae in {where}.",
    "Pleural effusion": "Pleural effusion ({side}).",
    "Mosaic attenuation pattern": "Mosaic attenuation pattern.",
    "Peribronchial thickening": "Peribronchial thickening.",
    "Consolidation": "Consolidation in {where}.",
    "Bronchiectasis": "Bronchiectasis in {where}.",
    "Interlobular septal thickening": "Interlobular septal thickening.",
}

_SECTIONS: dict[str, tuple[str, ...]] = {
    "mediastinum": (
        "Medical material",
        "Cardiomegaly",
        "Pericardial effusion",
        "Coronary artery wall calcification",
        "Arterial wall calcification",
        "Lymphadenopathy",
        "Hiatal hernia",
    ),
    "lungs": (
        "Emphysema",
        "Lung nodule",
        "Lung opacity",
        "Consolidation",
        "Atelectasis",
        "Pulmonary fibrotic sequela",
        "Interlobular septal thickening",
        "Mosaic attenuation pattern",
        "Bronchiectasis",
        "Peribronchial thickening",
    ),
    "pleura": ("Pleural effusion",),
}


def write_report_text(
    rng: np.random.Generator,
    labels: Mapping[str, int],
    details: Mapping[str, Facts],
    contrast: bool,
    label_noise: float,
    hedge_share: float,
) -> SyntheticReport:
    """The report of a study with true ``labels`` (0/1), lesion ``details`` and ``contrast``; draws from ``rng``.

    A pure function of its arguments: the same rng state gives the same report.
    """
    if not 0 <= label_noise < 1 or not 0 <= hedge_share < 1:
        raise ValueError(f"label_noise ({label_noise}) and hedge_share ({hedge_share}) must be in [0, 1)")
    p_negate = rng.uniform(0.35, 0.95)  # how exhaustive this radiologist is about normal findings
    reported: dict[str, int | None] = {}
    events: list[tuple[str, str]] = []
    for name in ABNORMALITIES:
        if labels[name]:
            u = rng.random()
            if u < label_noise:
                reported[name] = None
                events.append((name, "omitted"))
            elif u < label_noise + hedge_share:
                reported[name] = -1
                events.append((name, "hedged"))
            else:
                reported[name] = 1
        else:
            reported[name] = 0 if rng.random() < p_negate else None

    def sentence(name: str) -> str:
        facts = details.get(name, {})
        value = reported[name]
        if value == 1:
            return _present(rng, name, facts)
        if value == -1:
            return _pick(rng, _HEDGED[name]).format(where=lobe_phrase(facts.get("lobes")))
        return _pick(rng, _NEGATED[name])

    headers = rng.random() < 0.6
    paragraphs: list[str] = []
    intro = (
        "The examination was performed after intravenous contrast administration."
        if contrast
        else _pick(
            rng, ["Non-contrast chest CT.", "The examination was performed without intravenous contrast."]
        )
    )
    paragraphs.append(intro)
    med = [
        "Trachea and both main bronchi are patent.",
        "Thoracic aorta diameter is normal.",
        "Thoracic esophageal calibre is within normal limits.",
    ]
    med += [sentence(n) for n in _SECTIONS["mediastinum"] if reported[n] is not None]
    lungs = [sentence(n) for n in _SECTIONS["lungs"] if reported[n] is not None]
    if not lungs:
        lungs = ["Aeration of both lungs is normal."]
    pleura = [sentence(n) for n in _SECTIONS["pleura"] if reported[n] is not None]
    other = [
        _pick(
            rng,
            [
                "Upper abdominal organs included in the sections are unremarkable.",
                "The visualised upper abdomen is unremarkable.",
            ],
        ),
        _pick(
            rng,
            [
                "Bone structures are intact; vertebral body heights are preserved.",
                "No destructive bone lesion.",
            ],
        ),
    ]
    blocks = [
        ("MEDIASTINUM AND HEART", med),
        ("LUNGS AND AIRWAYS", ["When examined in the lung parenchyma window:", *lungs]),
        ("PLEURA", pleura),
        ("UPPER ABDOMEN AND BONES", other),
    ]
    for title, lines in blocks:
        if not lines:
            continue
        text = " ".join(lines)
        paragraphs.append(f"{title}:\n{text}" if headers else text)
    findings = "\n\n".join(paragraphs)

    impression = []
    for name in ABNORMALITIES:
        value = reported[name]
        if value not in (1, -1):
            continue
        facts = details.get(name, {})
        phrase = _IMPRESSION[name].format(
            where=lobe_phrase(facts.get("lobes")),
            kind=facts.get("kind", "device"),
            size=facts.get("size_mm", ""),
            side=facts.get("side", ""),
        )
        impression.append(phrase if value == 1 else f"Possible {phrase[0].lower()}{phrase[1:]}")
    if not impression:
        impression = [
            _pick(
                rng,
                ["No acute cardiopulmonary abnormality.", "Thoracic CT examination within normal limits."],
            )
        ]
    text = (
        "\n".join(f"{i + 1}. {p}" for i, p in enumerate(impression)) if len(impression) > 1 else impression[0]
    )
    return SyntheticReport(findings=findings, impression=text, reported_labels=reported, noise_events=events)
