"""Attributes of a mention read from its sentence: laterality, lung lobe and the stated size in millimetres."""

from __future__ import annotations

import re

_SIZE = re.compile(
    r"(?<![\w.])(\d+(?:[.,]\d+)?)((?:\s*[x×*]\s*\d+(?:[.,]\d+)?)*)\s*(mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?)\b",
    re.IGNORECASE,
)
_NUM = re.compile(r"\d+(?:[.,]\d+)?")
_BILATERAL = re.compile(
    r"\b(?:bilateral(?:ly)?|both (?:lungs?|hemithora\w*|sides|hila|lower|upper|pleural)|bibasilar|bibasal)\b",
    re.I,
)
_RIGHT = re.compile(r"\bright\b", re.I)
_LEFT = re.compile(r"\bleft\b", re.I)
_LOBE = re.compile(
    r"\b(?:(right|left)\s+(?:lung\s+)?)?(upper|middle|lower)\s+lobes?(?:\s+of\s+the\s+(right|left)\s+lung)?|\b(lingula\w*)",
    re.IGNORECASE,
)
_LOBE_CODE = {("right", "upper"): "RUL", ("right", "middle"): "RML", ("right", "lower"): "RLL",
              ("left", "upper"): "LUL", ("left", "lower"): "LLL"}  # fmt: skip


def _num(text: str) -> float:
    return float(text.replace(",", "."))


def sizes_mm(sentence: str) -> list[tuple[int, float]]:
    """All stated sizes as (character offset, largest dimension in mm), e.g. '13x9.3 mm' -> 13.0."""
    out = []
    for m in _SIZE.finditer(sentence):
        dims = [_num(m.group(1))] + [_num(d) for d in _NUM.findall(m.group(2) or "")]
        factor = 10.0 if m.group(3).lower().startswith(("cm", "centi")) else 1.0
        out.append((m.start(), max(dims) * factor))
    return out


def size_near(sentence: str, offset: int) -> float | None:
    """The stated size closest to ``offset`` (the mention's position within the sentence), if any."""
    found = sizes_mm(sentence)
    if not found:
        return None
    return min(found, key=lambda s: abs(s[0] - offset))[1]


def laterality(sentence: str) -> str:
    """'bilateral', 'right', 'left' or '' from the words of the sentence."""
    if _BILATERAL.search(sentence):
        return "bilateral"
    right, left = bool(_RIGHT.search(sentence)), bool(_LEFT.search(sentence))
    if right and left:
        return "bilateral"
    return "right" if right else "left" if left else ""


def lobes(sentence: str, side: str | None = None) -> str:
    """Lung lobes named in the sentence as sorted codes joined by ';' (RUL, RML, RLL, LUL, LLL, lingula).

    ``side`` is the sentence's :func:`laterality` when the caller has it already.
    """
    side_default = laterality(sentence) if side is None else side
    found: set[str] = set()
    for m in _LOBE.finditer(sentence):
        if m.group(4):
            found.add("lingula")
            continue
        side = (m.group(1) or m.group(3) or "").lower()
        level = m.group(2).lower()
        if side:
            sides = [side]
        else:  # the side comes from the sentence; "both" means each lung
            sides = (
                ["right", "left"] if side_default == "bilateral" else [side_default] if side_default else []
            )
        for s in sides:
            if (s, level) in _LOBE_CODE:
                found.add(_LOBE_CODE[(s, level)])
            elif level == "middle":
                found.add("RML")
    return ";".join(sorted(found))
