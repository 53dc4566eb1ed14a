"""Champion/challenger gate: promote a candidate only if it is not meaningfully worse than the champion."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    """The outcome and every number it rests on (recorded whether or not the candidate is promoted)."""

    promote: bool
    reason: str
    macro: dict[str, float | None] = field(default_factory=dict)
    per_abnormality: dict[str, dict[str, float | None]] = field(default_factory=dict)
    failures: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["failures"] = list(self.failures)
        return d


def _fmt(v: float | None) -> str:
    return "undefined" if v is None else f"{v:.4f}"


def _delta(cand: float | None, champ: float | None) -> float | None:
    return None if cand is None or champ is None else round(float(cand) - float(champ), 6)


def gate(
    candidate_auroc: Mapping[str, float | None],
    candidate_macro: float | None,
    champion_auroc: Mapping[str, float | None] | None,
    champion_macro: float | None,
    *,
    max_macro_drop: float,
    max_label_drop: float,
    min_macro_auroc: float = 0.0,
    min_test_studies: int = 0,
    test_studies: int | None = None,
) -> GateDecision:
    """Decide promotion.

    Rules: first the quality floor, which holds with or without a champion: the candidate is rejected
    when its macro AUROC is undefined or below ``min_macro_auroc`` (when that is above 0), or when it was
    evaluated on fewer than ``min_test_studies`` test studies (``test_studies``; unknown counts as 0).
    Then, with no champion, the candidate is promoted (first model). Otherwise it is rejected when its
    macro AUROC is undefined, when macro AUROC drops by more than ``max_macro_drop``, or when any
    abnormality defined for both models drops by more than ``max_label_drop``. Abnormalities defined
    for only one model are listed with a ``None`` difference and never decide.
    """
    floor: list[str] = []
    if min_macro_auroc > 0 and (candidate_macro is None or candidate_macro < min_macro_auroc):
        floor.append(
            f"macro AUROC {_fmt(candidate_macro)} is below the quality floor min_macro_auroc {min_macro_auroc}"
        )
    if min_test_studies > 0 and (test_studies or 0) < min_test_studies:
        floor.append(f"{test_studies or 0} test studies < min_test_studies {min_test_studies}")
    if floor:
        macro0 = {
            "candidate": candidate_macro,
            "champion": champion_macro,
            "delta": _delta(candidate_macro, champion_macro),
        }
        return GateDecision(False, "rejected: " + "; ".join(floor), macro0, {}, tuple(floor))
    if champion_auroc is None:
        return GateDecision(
            True,
            "first model: no champion in the registry",
            {"candidate": candidate_macro, "champion": None, "delta": None},
        )
    macro = {
        "candidate": candidate_macro,
        "champion": champion_macro,
        "delta": _delta(candidate_macro, champion_macro),
    }
    per = {
        name: {
            "candidate": candidate_auroc.get(name),
            "champion": champion_auroc.get(name),
            "delta": _delta(candidate_auroc.get(name), champion_auroc.get(name)),
        }
        for name in candidate_auroc
    }
    failures: list[str] = []
    if candidate_macro is None:
        failures.append(
            "candidate macro AUROC is undefined (no abnormality has both classes in the test split)"
        )
    elif macro["delta"] is not None and macro["delta"] < -max_macro_drop - 1e-12:
        failures.append(f"macro AUROC drops {-macro['delta']:.4f} > max_macro_drop {max_macro_drop}")
    for name, d in per.items():
        if d["delta"] is not None and d["delta"] < -max_label_drop - 1e-12:
            failures.append(f"{name}: AUROC drops {-d['delta']:.4f} > max_label_drop {max_label_drop}")
    if failures:
        return GateDecision(False, "rejected: " + "; ".join(failures), macro, per, tuple(failures))
    return GateDecision(True, "promoted: no drop beyond the tolerances", macro, per)
