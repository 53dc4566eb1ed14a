"""Git record of a retrain run: one commit of what DVC and the flow wrote, a tag per published version.

The commit holds only the pipeline's own bookkeeping (never data: DVC's .gitignore files keep that out):
``dvc.lock``, ``params.yaml`` (registered batches), the batches' and truths' ``.dvc`` files and DVC's
``.gitignore`` files beside them, and the metrics and plots under ``reports/`` that DVC does not cache.
Other changes in the checkout are left alone (``git commit --only`` of these paths).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: What a retrain run writes that belongs in git (each only where it exists).
RECORDED_PATHS = ("dvc.lock", "params.yaml", "data/raw", "data/synth", "reports")
_IDENTITY = {
    "GIT_AUTHOR_NAME": "exact retrain",
    "GIT_AUTHOR_EMAIL": "exact-retrain@localhost",
    "GIT_COMMITTER_NAME": "exact retrain",
    "GIT_COMMITTER_EMAIL": "exact-retrain@localhost",
}


class GitError(RuntimeError):
    pass


@dataclass(frozen=True)
class GitRecord:
    commit: str | None  # None: nothing to commit (or not a git checkout)
    tag: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"commit": self.commit, "tag": self.tag}


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if not _has_identity(repo):
        env.update({k: env.get(k, v) for k, v in _IDENTITY.items()})
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise GitError(
            f"`git {' '.join(args[:2])}` failed in {repo} (exit {proc.returncode}): {proc.stderr.strip()[-800:]}"
        )
    return proc


def _has_identity(repo: Path) -> bool:
    if os.environ.get("GIT_AUTHOR_EMAIL") and os.environ.get("GIT_COMMITTER_EMAIL"):
        return True
    proc = subprocess.run(["git", "config", "user.email"], cwd=repo, capture_output=True, text=True)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def is_checkout(repo: Path) -> bool:
    """True when ``repo`` is the top of a git work tree."""
    proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=repo, capture_output=True, text=True)
    return proc.returncode == 0 and Path(proc.stdout.strip()).resolve() == Path(repo).resolve()


def head(repo: Path) -> str | None:
    proc = _git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def record_run(repo: Path, message: str, tag: str | None = None, tag_message: str = "") -> GitRecord:
    """Commit :data:`RECORDED_PATHS` (only those) with ``message``; tag the commit when ``tag`` is given.

    Returns the commit (None when nothing changed; a tag then goes on HEAD). A tag that already exists
    is left where it is (published versions are immutable: one name never points at two commits) and
    the record's ``tag`` is None. Git hooks run as for any commit; a failing hook fails the run.
    """
    repo = Path(repo)
    paths = [p for p in RECORDED_PATHS if (repo / p).exists()]
    if paths:
        _git(repo, "add", "--", *paths)
    staged = _git(repo, "diff", "--cached", "--quiet", "--", *paths, check=False).returncode != 0
    commit = None
    if staged:
        _git(repo, "commit", "--quiet", "-m", message, "--only", "--", *paths)
        commit = head(repo)
    if tag:
        if _git(repo, "rev-parse", "--verify", "-q", f"refs/tags/{tag}", check=False).returncode == 0:
            return GitRecord(commit, None)
        _git(repo, "tag", "-a", tag, "-m", tag_message or message, commit or "HEAD")
    return GitRecord(commit, tag)
