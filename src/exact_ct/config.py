"""Typed, frozen configuration sections loaded from params.yaml; unknown keys are rejected."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    pass


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: params file not found (run from the repository root)")
    with open(p, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at top level")
    return data


def from_dict(cls: type[T], data: dict[str, Any] | None, section: str = "") -> T:
    """Build a frozen dataclass from a mapping, rejecting unknown keys with the section named.

    Nested dataclass fields are built recursively; tuple fields accept YAML lists.
    """
    data = dict(data or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    where = f"params section {section!r}" if section else cls.__name__
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints.get(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{section}.{name}" if section else name)
        elif isinstance(value, list) and getattr(hint, "__origin__", None) is tuple:
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def section(cls: type[T], name: str, path: str | os.PathLike[str] = DEFAULT_PARAMS) -> T:
    """Load one section of params.yaml into its typed config."""
    return from_dict(cls, load_params(path).get(name), name)
