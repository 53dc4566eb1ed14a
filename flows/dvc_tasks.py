"""Thin, typed wrappers around the DVC command line, shared by the flows (one DVC writer at a time)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

_RUNNING = re.compile(r"Running stage '([^']+)'")
_SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message names the stage and the last lines of its error."""

    def __init__(self, stage: str, returncode: int, tail: str) -> None:
        super().__init__(f"stage {stage!r} failed (exit {returncode}): {tail}")
        self.stage = stage
        self.returncode = returncode
        self.tail = tail


@dataclass
class ReproResult:
    stage: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "ran": self.ran,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 2),
        }


def dvc_executable() -> str:
    """The `dvc` next to the running interpreter (the project venv), else the one on PATH."""
    candidate = Path(sys.executable).with_name("dvc")
    return str(candidate) if candidate.exists() else (shutil.which("dvc") or "dvc")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    # Stage commands run `python -m stages.X`: make sure that is the project's interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_dvc(args: list[str], repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dvc_executable(), *args], cwd=repo, capture_output=True, text=True, env=_env())


def pipeline_stages(repo: Path) -> list[str]:
    """Top-level stage names in dvc.yaml, in file order (foreach stages by their group name)."""
    with open(repo / "dvc.yaml", encoding="utf-8") as f:
        return list((yaml.safe_load(f) or {}).get("stages", {}))


def repro(stage: str, repo: Path) -> ReproResult:
    """`dvc repro <stage>`; DVC decides which instances are stale. Returns what ran and what was skipped."""
    t0 = time.perf_counter()
    proc = run_dvc(["repro", stage], repo)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in out.strip().splitlines()[-6:])
        raise StageFailed(stage, proc.returncode, tail)

    def own(names: list[str]) -> list[str]:
        # `dvc repro X` also checks X's upstream stages; report only X's own instances.
        return sorted({n for n in names if n == stage or n.startswith(f"{stage}@")})

    return ReproResult(
        stage=stage,
        ran=own(_RUNNING.findall(out)),
        skipped=own(_SKIPPED.findall(out)),
        seconds=time.perf_counter() - t0,
    )


def is_up_to_date(repo: Path, stages: list[str] | None = None) -> bool:
    """True when DVC has nothing stale among ``stages`` and their upstream (all stages when None)."""
    proc = run_dvc(["status", "--quiet", *(["--with-deps", *stages] if stages else [])], repo)
    return proc.returncode == 0


def push(repo: Path) -> None:
    """`dvc push` of everything DVC tracks, then of every registered batch's and truth's .dvc file by name.

    The second call is a guard: DVC skips a folder whose contents .gitignore matches with ``dir/*``
    (DVC 3.67 treats ``/data/raw/*`` as ignoring ``data/raw/`` itself), and the raw batches must never be
    left without a backup because of an ignore pattern.
    """
    tracked = sorted(
        p.relative_to(repo).as_posix() for d in ("data/raw", "data/synth") for p in (repo / d).glob("*.dvc")
    )
    for args in (["push", "--quiet"], ["push", "--quiet", *tracked] if tracked else []):
        if not args:
            continue
        proc = run_dvc(args, repo)
        if proc.returncode != 0:
            raise RuntimeError(f"dvc push failed: {proc.stderr.strip()[-500:]}")
