"""Hospital drops and registered batches: completeness checks, registration into data/raw, params.yaml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from exact_ct.io import atomic_path

#: The hospital writes this empty file last; a drop without it is still being copied and is left alone.
COMPLETE_MARKER = "_COMPLETE"
REPORTS_FILE = "reports.csv"
BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DropError(ValueError):
    pass


@dataclass(frozen=True)
class DropCheck:
    path: Path
    complete: bool
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.complete and not self.problems


def check_drop(drop: Path) -> DropCheck:
    """Validate a drop's layout: the completion marker, reports.csv, and at least one image file."""
    problems: list[str] = []
    complete = (drop / COMPLETE_MARKER).is_file()
    if not (drop / REPORTS_FILE).is_file():
        problems.append(
            f"{drop}: missing {REPORTS_FILE} (columns accession_number,patient_id,findings,impression)"
        )
    has_images = any(
        p.is_file() for sub in ("dicom", "nifti") if (drop / sub).is_dir() for p in (drop / sub).rglob("*")
    )
    if not has_images:
        problems.append(f"{drop}: no files under dicom/ or nifti/")
    return DropCheck(drop, complete, tuple(problems))


def find_complete_drops(inbox: Path) -> list[Path]:
    """Drops in the inbox whose completion marker exists, sorted by name (deterministic order)."""
    if not inbox.is_dir():
        return []
    return sorted(p for p in inbox.iterdir() if p.is_dir() and (p / COMPLETE_MARKER).is_file())


def read_batches(params_path: Path) -> list[str]:
    from exact_ct.config import load_params

    return [str(b) for b in (load_params(params_path).get("batches") or [])]


def add_batch_to_params(params_path: Path, batch: str) -> None:
    """Append a batch to `batches:` in params.yaml, keeping comments and order (ruamel round trip)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    with open(params_path, encoding="utf-8") as f:
        data = yaml.load(f)
    from ruamel.yaml.comments import CommentedSeq

    batches = list(data.get("batches") or [])
    if batch in batches:
        return
    # A flow-style list keeps the blank lines and comments around `batches:` where they were.
    seq = CommentedSeq([*batches, batch])
    seq.fa.set_flow_style()
    data["batches"] = seq
    with atomic_path(params_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yaml.dump(data, f)


def register_drop(
    drop: Path,
    batch: str,
    repo_root: Path = Path("."),
    *,
    move: bool = True,
    dvc_track: bool = True,
) -> Path:
    """Move (or copy) a complete drop into ``data/raw/<batch>``, track it with DVC, list it in params.yaml.

    The destination appears atomically: the drop is first placed under a hidden temporary name in
    ``data/raw`` and renamed only when complete. Registration refuses incomplete drops, invalid batch
    names and batches that already exist, so a batch once registered is immutable.
    """
    drop = Path(drop)
    if not BATCH_NAME.match(batch):
        raise DropError(f"batch name {batch!r} is invalid: use letters, digits, '_', '-', '.' (max 64)")
    raw = repo_root / "data" / "raw"
    dest = raw / batch
    params_path = repo_root / "params.yaml"
    if batch in read_batches(params_path):
        raise DropError(
            f"batch {batch!r} is already registered ({dest}); batches are immutable, pick a new name"
        )
    if dest.exists() and not drop.exists():
        # An earlier attempt moved the drop but was interrupted before tracking it: finish that job.
        pass
    elif dest.exists():
        raise DropError(f"{dest} already exists but is not a registered batch; remove it or pick a new name")
    else:
        check = check_drop(drop)
        if not check.complete:
            raise DropError(
                f"{drop}: drop is not complete (no {COMPLETE_MARKER} marker); the hospital writes it last"
            )
        if check.problems:
            raise DropError("; ".join(check.problems))
        raw.mkdir(parents=True, exist_ok=True)
        tmp = raw / f".{batch}.registering"
        if tmp.exists():
            shutil.rmtree(tmp)  # left over from an interrupted copy; it was never visible as a batch
        if move:
            shutil.move(str(drop), str(tmp))
        else:
            shutil.copytree(drop, tmp)
        os.replace(tmp, dest)
    if dvc_track:
        _run([_dvc(), "add", "--quiet", str(dest.relative_to(repo_root))], cwd=repo_root)
    add_batch_to_params(params_path, batch)
    return dest


def _dvc() -> str:
    """The `dvc` of the running environment (the project venv need not be activated)."""
    candidate = Path(sys.executable).with_name("dvc")
    return str(candidate) if candidate.exists() else (shutil.which("dvc") or "dvc")


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
