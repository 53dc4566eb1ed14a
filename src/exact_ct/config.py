"""Typed, frozen configuration sections loaded from params.yaml; unknown keys are rejected.

Every value is validated against its field's type with pydantic when the section is loaded (``"two"``
for an ``int`` is an error naming the key); a field annotated with a constrained type (``PositiveInt``,
``NonNegativeInt``, ``NonNegativeFloat``, ``Share`` below, or any ``Annotated[..., Field(...)]``) is
checked against its range too.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import yaml
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, TypeAdapter, ValidationError

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    pass


#: a share or probability in [0, 1]
Share = Annotated[float, Field(ge=0.0, le=1.0)]

__all__ = [
    "ConfigError",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveInt",
    "Share",
    "from_dict",
    "load_params",
    "resolve_profile",
    "section",
]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


@functools.cache
def _adapter(cls: type, name: str) -> TypeAdapter[Any]:
    return TypeAdapter(_hints(cls)[name])


def _check(cls: type, name: str, value: Any, key: str, where: str) -> Any:
    """``value`` validated (and converted, e.g. list -> tuple) against the type of field ``name``."""
    try:
        return _adapter(cls, name).validate_python(value)
    except ValidationError as e:
        err = e.errors()[0]
        sub = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in err.get("loc", ()))
        raise ConfigError(f"{where}: key {key + sub!r}: {err['msg']} (got {value!r})") from None


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

    Nested dataclass fields are built recursively; every other value is validated against the field's
    type (and range, for constrained types) with pydantic, so a wrong value fails here with its key
    named; tuple fields accept YAML lists.
    """
    data = dict(data or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    where = f"params section {section!r}" if section else cls.__name__
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints.get(name)
        key = f"{section}.{name}" if section else name
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, key)
        else:
            value = _check(cls, name, value, name, where)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def resolve_profile(profiles: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    """The mapping of profile ``name``: a profile with ``inherits: OTHER`` is OTHER's mapping with its own
    keys merged over it (nested mappings merged key by key), so a profile lists only what differs."""
    seen: list[str] = []
    chain: list[dict[str, Any]] = []
    while True:
        if name not in profiles:
            raise ConfigError(f"{where}: profile {name!r} not in {sorted(profiles)}")
        if name in seen:
            raise ConfigError(f"{where}: profiles inherit in a cycle: {' -> '.join([*seen, name])}")
        seen.append(name)
        body = dict(profiles[name] or {})
        chain.append(body)
        parent = body.pop("inherits", None)
        chain[-1] = body
        if parent is None:
            break
        name = str(parent)
    merged: dict[str, Any] = {}
    for body in reversed(chain):
        merged = _merge(merged, body)
    return merged


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def section(cls: type[T], name: str, path: str | os.PathLike[str] = DEFAULT_PARAMS) -> T:
    """Load one section of params.yaml into its typed config."""
    return from_dict(cls, load_params(path).get(name), name)
