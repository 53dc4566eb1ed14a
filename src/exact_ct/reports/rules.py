"""Load the report-labelling rules (sections, targets, ConText) from JSON files by path."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exact_ct.schema import ABNORMALITIES

#: Folder of the rules shipped with the package (a DVC dependency of the parse_reports stage).
DEFAULT_RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
RULE_FILES = ("sections.json", "targets.json", "context.json")

#: Target category that shadows overlapping matches (longest match wins) and never yields a label.
EXCLUDE = "EXCLUDE"
_METADATA_KEYS = {
    "value",
    "routes",
    "default",
    "exclude_sentence",
    "unless_sentence",
    "require_sentence",
    "min_size_mm",
}
_MACRO = re.compile(r"\{([A-Z_]+)\}")


class RuleError(ValueError):
    """A rule file is malformed; the message names the file and the rule."""


@dataclass(frozen=True)
class TargetMeta:
    """Compiled per-rule post-processing (see docs/reports.md, 'metadata')."""

    value: int | None = None
    routes: tuple[tuple[re.Pattern[str], str], ...] = ()
    default: str | None = None
    exclude_sentence: re.Pattern[str] | None = None
    unless_sentence: re.Pattern[str] | None = None
    require_sentence: re.Pattern[str] | None = None
    min_size_mm: float | None = None
    routed: bool = False


@dataclass(frozen=True)
class RuleSet:
    """Raw rule dictionaries (picklable, so worker processes can rebuild the pipeline) and their digest."""

    sections: tuple[dict[str, Any], ...]
    targets: tuple[dict[str, Any], ...]
    context: tuple[dict[str, Any], ...]
    digest: str
    source: str = field(default="")


def _expand(text: str, macros: dict[str, str], where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in macros:
            raise RuleError(f"{where}: unknown macro {{{m.group(1)}}}; defined: {sorted(macros)}")
        return f"(?:{macros[m.group(1)]})"

    return _MACRO.sub(sub, text)


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise RuleError(f"{where}: invalid regular expression: {e}") from None


def load_rules(rules_dir: str | Path | None = None) -> RuleSet:
    """Read and validate ``sections.json``, ``targets.json`` and ``context.json`` from ``rules_dir``.

    Target categories must be one of the 18 abnormalities, ``EXCLUDE``, or a routed category (one whose
    rules carry ``routes``); macros such as ``{LUNG}`` are expanded here so the files stay readable.
    """
    folder = Path(rules_dir) if rules_dir else DEFAULT_RULES_DIR
    digest = hashlib.sha256()
    data: dict[str, Any] = {}
    for name in RULE_FILES:
        path = folder / name
        if not path.is_file():
            raise RuleError(f"{path}: rule file not found (expected {', '.join(RULE_FILES)} in {folder})")
        raw = path.read_bytes()
        digest.update(name.encode() + b"\0" + raw)
        try:
            data[name] = json.loads(raw)
        except json.JSONDecodeError as e:
            raise RuleError(f"{path}: invalid JSON: {e}") from None
    macros = {k: str(v) for k, v in data["targets.json"].get("macros", {}).items()}
    targets = []
    for i, rule in enumerate(data["targets.json"].get("target_rules", [])):
        where = f"{folder / 'targets.json'} rule {i} ({rule.get('literal', '?')!r})"
        rule = dict(rule)
        if "pattern" in rule and isinstance(rule["pattern"], str):
            rule["pattern"] = _expand(rule["pattern"], macros, where)
            _compile(rule["pattern"], where)
        meta = dict(rule.get("metadata") or {})
        unknown = set(meta) - _METADATA_KEYS
        if unknown:
            raise RuleError(
                f"{where}: unknown metadata keys {sorted(unknown)}; allowed: {sorted(_METADATA_KEYS)}"
            )
        for key in ("exclude_sentence", "unless_sentence", "require_sentence"):
            if key in meta:
                meta[key] = _expand(meta[key], macros, where)
                _compile(meta[key], where)
        names = [r[1] for r in meta.get("routes", [])] + ([meta["default"]] if meta.get("default") else [])
        cat = rule.get("category")
        if not meta.get("routes") and cat not in ABNORMALITIES and cat != EXCLUDE:
            raise RuleError(f"{where}: category {cat!r} is not an abnormality, EXCLUDE, or a routed category")
        for n in names:
            if n not in ABNORMALITIES:
                raise RuleError(f"{where}: route names unknown abnormality {n!r}")
        for pat, _ in meta.get("routes", []):
            _compile(pat, where)
        rule["metadata"] = meta
        targets.append(rule)
    return RuleSet(
        sections=tuple(data["sections.json"].get("section_rules", [])),
        targets=tuple(targets),
        context=tuple(data["context.json"].get("context_rules", [])),
        digest=digest.hexdigest(),
        source=str(folder),
    )


def compile_meta(meta: dict[str, Any]) -> TargetMeta:
    """Compile one target rule's metadata into regexes once per process."""
    return TargetMeta(
        value=meta.get("value"),
        routes=tuple((re.compile(p, re.IGNORECASE), a) for p, a in meta.get("routes", [])),
        default=meta.get("default"),
        exclude_sentence=re.compile(meta["exclude_sentence"], re.IGNORECASE)
        if "exclude_sentence" in meta
        else None,
        unless_sentence=re.compile(meta["unless_sentence"], re.IGNORECASE)
        if "unless_sentence" in meta
        else None,
        require_sentence=re.compile(meta["require_sentence"], re.IGNORECASE)
        if "require_sentence" in meta
        else None,
        min_size_mm=meta.get("min_size_mm"),
        routed=bool(meta.get("routes")),
    )
