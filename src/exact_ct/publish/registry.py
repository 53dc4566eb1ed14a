"""The model registry: ``models/registry/<semver>/`` folders, a champion pointer and a deterministic index.

Layout::

    models/registry/
      registry.json          every version: weights sha256, data version, bump kind, macro AUROC
      champion.json          {"version": ..., "weights_sha256": ..., "previous": [older champions, newest last]}
      <major.minor.patch>/   weights.pt + package.json (the model package, version set to the folder's)
                             model_card.md, metrics.json (evaluation), configs/metadata.json and
                             configs/inference.json: the folder is a MONAI bundle (publish.card)

Versions come from the registry's content, never from a clock: the first version is the package's own
(or ``publish.first_version``); later ones bump MAJOR when the schema, network or preprocessing differs
from the latest version (old outputs or weights no longer fit), MINOR when only the data version
differs (retrained on new data), PATCH otherwise (parameters only).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from exact_ct.io import sha256_file, write_json_atomic

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
REGISTRY_INDEX = "registry.json"
CHAMPION = "champion.json"


def parse_version(v: str) -> tuple[int, int, int]:
    m = SEMVER.match(v.strip())
    if not m:
        raise ValueError(f"{v!r} is not a semantic version MAJOR.MINOR.PATCH")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def bump(version: str, kind: str) -> str:
    major, minor, patch = parse_version(version)
    if kind == "major":
        return f"{major + 1}.0.0"
    if kind == "minor":
        return f"{major}.{minor + 1}.0"
    if kind == "patch":
        return f"{major}.{minor}.{patch + 1}"
    raise ValueError(f"unknown bump kind {kind!r}")


def bump_kind(candidate: dict[str, Any], previous: dict[str, Any]) -> str:
    """major / minor / patch from two package manifests (package.json contents)."""
    for key in ("schema", "network", "pooling", "preprocessing", "format_version"):
        if candidate.get(key) != previous.get(key):
            return "major"
    if candidate.get("data_version") != previous.get("data_version"):
        return "minor"
    return "patch"


class Registry:
    """A registry folder; all reads tolerate an empty or missing folder (no model published yet)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def index(self) -> dict[str, Any]:
        p = self.root / REGISTRY_INDEX
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {"versions": []}

    def versions(self) -> list[str]:
        """Registered versions, oldest first (semantic order)."""
        return sorted((v["version"] for v in self.index()["versions"]), key=parse_version)

    def latest(self) -> str | None:
        vs = self.versions()
        return vs[-1] if vs else None

    def champion(self) -> str | None:
        p = self.root / CHAMPION
        if not p.is_file():
            return None
        v = json.loads(p.read_text(encoding="utf-8")).get("version")
        if v and not (self.root / v / "package.json").is_file():
            raise FileNotFoundError(
                f"{p} names version {v} but {self.root / v} holds no package; restore the registry (dvc pull)"
            )
        return v

    def path(self, version: str) -> Path:
        return self.root / version

    def manifest(self, version: str) -> dict[str, Any]:
        return json.loads((self.path(version) / "package.json").read_text(encoding="utf-8"))

    def metrics(self, version: str) -> dict[str, Any]:
        p = self.path(version) / "metrics.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    def find_weights(self, sha256: str) -> str | None:
        """The version already holding these exact weights, if any (publishing twice adds nothing)."""
        for v in self.index()["versions"]:
            if v.get("weights_sha256") == sha256:
                return str(v["version"])
        return None

    def next_version(self, candidate_manifest: dict[str, Any], first_version: str = "") -> tuple[str, str]:
        """(version, bump kind) for a new entry; kind is ``first`` for an empty registry."""
        latest = self.latest()
        if latest is None:
            v = first_version or str(candidate_manifest.get("version") or "0.1.0")
            parse_version(v)
            return v, "first"
        kind = bump_kind(candidate_manifest, self.manifest(latest))
        return bump(latest, kind), kind

    def add(
        self,
        version: str,
        package_dir: Path,
        files: dict[str, str],
        entry: dict[str, Any],
        provenance: dict[str, Any] | None = None,
    ) -> Path:
        """Copy the package into ``<version>/`` (package.json's version set to it) plus extra text files.

        ``provenance`` (e.g. the git revision the run started from) is added to package.json.

        The folder is assembled under a temporary name and renamed, so a crash never leaves a
        half-written version; the index is rewritten after the folder exists.
        """
        dest = self.path(version)
        if dest.exists():
            raise FileExistsError(f"{dest} already exists; registry versions are immutable")
        tmp = self.root / f".{version}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        shutil.copyfile(package_dir / "weights.pt", tmp / "weights.pt")
        manifest = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
        manifest["version"] = version
        manifest.update(provenance or {})
        write_json_atomic(tmp / "package.json", manifest)
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text, encoding="utf-8")
        os.replace(tmp, dest)
        idx = self.index()
        idx["versions"] = sorted(
            [*idx["versions"], {"version": version, **entry}], key=lambda e: parse_version(e["version"])
        )
        write_json_atomic(self.root / REGISTRY_INDEX, idx)
        return dest

    def _champion_record(self) -> dict[str, Any]:
        p = self.root / CHAMPION
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    def set_champion(self, version: str) -> None:
        """Make ``version`` the champion; the one it replaces is remembered for :meth:`rollback`."""
        if version not in self.versions() or not (self.path(version) / "package.json").is_file():
            raise ValueError(
                f"{self.root}: version {version!r} is not registered; registered: {self.versions() or 'none'}"
            )
        old = self._champion_record()
        previous = [str(v) for v in old.get("previous", [])]
        if old.get("version") and old["version"] != version:
            previous.append(str(old["version"]))
        write_json_atomic(
            self.root / CHAMPION,
            {
                "version": version,
                "weights_sha256": sha256_file(self.path(version) / "weights.pt"),
                "previous": previous,
            },
        )

    def rollback(self) -> tuple[str, str]:
        """Make the previous champion the champion again; returns (from, to)."""
        old = self._champion_record()
        current = old.get("version")
        previous = [str(v) for v in old.get("previous", [])]
        if not current or not previous:
            raise ValueError(f"{self.root / CHAMPION}: no earlier champion to roll back to")
        target = previous.pop()
        write_json_atomic(
            self.root / CHAMPION,
            {
                "version": target,
                "weights_sha256": sha256_file(self.path(target) / "weights.pt"),
                "previous": previous,
            },
        )
        return str(current), target
