"""Thin, typed wrappers around the DVC command line, shared by the flows (one DVC writer at a time)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from exact_ct.batches import dvc_executable

_RUNNING = re.compile(r"Running stage '([^']+)'")
_SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message names the stage and the last lines of its error."""

    def __init__(self, stage: str, returncode: int, tail: str) -> None:
        super().__init__(f"stage {stage!r} failed (exit {returncode}): {tail}")
        self.stage = stage
        self.returncode = returncode
        self.tail = tail


class StageTimedOut(StageFailed):
    """A DVC stage ran longer than its time limit and was stopped (with every process it started)."""

    def __init__(self, stage: str, seconds: float, tail: str) -> None:
        RuntimeError.__init__(self, f"stage {stage!r} stopped after the {seconds:g} s time limit: {tail}")
        self.stage, self.returncode, self.tail = stage, -9, tail


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


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    """Stop ``dvc`` and the stage command it started (the stage would otherwise run on, holding DVC's lock)."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        procs = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:  # dvc has already exited
        return
    for p in procs:
        with contextlib.suppress(psutil.Error):  # gone meanwhile
            p.kill()


def repro(
    stage: str,
    repo: Path,
    *,
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> ReproResult:
    """`dvc repro <stage>`; DVC decides which instances are stale. Returns what ran and what was skipped.

    Every output line (DVC's and the stage command's: epochs, study counts) is passed to ``on_line`` as
    it is written, so a caller can stream it into its run's logs. A run longer than ``timeout`` seconds
    is stopped and raises :class:`StageTimedOut`.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [dvc_executable(), "repro", stage],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=_env(),
    )
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _kill_tree(proc)

    timer = threading.Timer(timeout, expire) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            lines.append(line)
            if on_line is not None and line.strip():
                on_line(line)
        proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            _kill_tree(proc)
            proc.wait()
    out = "\n".join(lines)
    tail = " | ".join(line.strip() for line in out.strip().splitlines()[-6:])
    if timed_out.is_set():
        raise StageTimedOut(stage, float(timeout or 0), tail)
    if proc.returncode != 0:
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
