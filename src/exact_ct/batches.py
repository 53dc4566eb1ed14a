"""Hospital drops and registered batches: completeness checks, registration into data/raw, params.yaml.

Registration is journaled: ``data/raw/.<batch>.pending.json`` is written before anything moves and removed
after ``params.yaml`` lists the batch, so a run killed at any point (during ``dvc add`` included) is
finished by :func:`resume_registrations` at the start of the next run.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from exact_ct.droptree import DropTree, Rejected, walk_drop
from exact_ct.io import atomic_path, sha256_file, write_json_atomic, write_text_atomic

#: The hospital writes this empty file last; a drop without it is still being copied and is left alone.
COMPLETE_MARKER = "_COMPLETE"
REPORTS_FILE = "reports.csv"
#: Optional: ``sha256sum`` output (``<hex>  <relative path>`` per file) the hospital writes before the marker.
MANIFEST_FILE = "_MANIFEST.sha256"
#: Files of a drop that are not imaging input (ingest reads everything else).
DROP_META_FILES = (REPORTS_FILE, COMPLETE_MARKER, MANIFEST_FILE)
#: Drops and entries set aside with their reasons: ``<inbox>/_quarantine/<drop>/{reasons.csv,files/}``.
QUARANTINE_DIR = "_quarantine"
BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MANIFEST_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")

#: Rules under which registration sets a whole drop aside (docs/reliability.md); entries that are links
#: or special files are set aside one by one under the rules of ``exact_ct.droptree.LINK_RULES``.
DROP_RULES = {
    "not_a_folder": "the inbox entry is a symbolic link (never followed), not a folder",
    "invalid_batch_name": "the folder name is not a valid batch name (letters, digits, _ - .; max 64)",
    "batch_exists": "a batch of that name is already registered or present in data/raw (batches are immutable)",
    "missing_reports": f"no regular {REPORTS_FILE} at the top of the drop",
    "no_images": "no regular file under dicom/ or nifti/",
    "manifest_invalid": f"{MANIFEST_FILE} has a line that is not '<sha256>  <relative path>' inside the drop",
    "manifest_mismatch": f"files listed in {MANIFEST_FILE} are missing or differ, or files are not listed",
}


class DropError(ValueError):
    pass


@dataclass(frozen=True)
class Problem:
    rule: str
    message: str


@dataclass(frozen=True)
class DropCheck:
    path: Path
    complete: bool
    problems: tuple[str, ...]
    rejected: tuple[Rejected, ...] = ()

    @property
    def ok(self) -> bool:
        return self.complete and not self.problems


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def drop_problems(tree: DropTree, *, verify_manifest: bool = True) -> list[Problem]:
    """Layout rules of a drop (regular files only; links never count) and, if present, its manifest."""
    drop = tree.root
    problems: list[Problem] = []
    if not _is_regular(drop / REPORTS_FILE):
        problems.append(
            Problem(
                "missing_reports",
                f"{drop.name}: missing {REPORTS_FILE} (columns accession_number,patient_id,findings,impression)",
            )
        )
    images = [
        p for p in tree.files if tree.rel(p).split("/", 1)[0] in ("dicom", "nifti") and "/" in tree.rel(p)
    ]
    if not images:
        problems.append(Problem("no_images", f"{drop.name}: no files under dicom/ or nifti/"))
    if verify_manifest and not problems and _is_regular(drop / MANIFEST_FILE):
        problem = check_manifest(tree)
        if problem is not None:
            problems.append(problem)
    return problems


def check_manifest(tree: DropTree) -> Problem | None:
    """Compare the drop's regular files with ``_MANIFEST.sha256``: counts, names and SHA-256 of each."""
    drop = tree.root
    listed: dict[str, str] = {}
    text = (drop / MANIFEST_FILE).read_text(encoding="utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _MANIFEST_LINE.match(line)
        rel = m.group(2).removeprefix("./") if m else ""
        if not m or rel.startswith("/") or ".." in rel.split("/"):
            return Problem(
                "manifest_invalid", f"{drop.name}: {MANIFEST_FILE} line {n} is not '<sha256>  <path>'"
            )
        listed[rel] = m.group(1).lower()
    present = {tree.rel(p): p for p in tree.files if tree.rel(p) not in (COMPLETE_MARKER, MANIFEST_FILE)}
    missing = sorted(set(listed) - set(present))
    unlisted = sorted(set(present) - set(listed))
    differ = sorted(rel for rel in set(listed) & set(present) if sha256_file(present[rel]) != listed[rel])
    if missing or unlisted or differ:
        return Problem(
            "manifest_mismatch",
            f"{drop.name}: {len(present)} file(s) present, {len(listed)} listed in {MANIFEST_FILE}: "
            f"{len(missing)} missing, {len(differ)} with another SHA-256, {len(unlisted)} not listed",
        )
    return None


def check_drop(drop: Path) -> DropCheck:
    """The completion marker, the layout rules and the manifest of a drop, without following any link."""
    drop = Path(drop)
    tree = walk_drop(drop)
    complete = _is_regular(drop / COMPLETE_MARKER)
    problems = drop_problems(tree)
    return DropCheck(drop, complete, tuple(p.message for p in problems), tree.rejected)


def find_complete_drops(inbox: Path) -> list[Path]:
    """Drops in the inbox whose completion marker exists, sorted by name (deterministic order).

    Links in the inbox are not drops (see :func:`triage_inbox`, which sets them aside).
    """
    if not inbox.is_dir():
        return []
    return sorted(
        p for p in inbox.iterdir() if not p.is_symlink() and p.is_dir() and _is_regular(p / COMPLETE_MARKER)
    )


@dataclass(frozen=True)
class Triage:
    """What the scheduled flow does with one inbox entry.

    ``action``: ``register``, ``hold`` (left in the inbox for a later run: still settling), ``set_aside``
    (moved to ``<inbox>/_quarantine`` with ``rule``), or ``waiting`` (no ``_COMPLETE`` marker yet).
    ``rejected`` lists entries (links, special files) set aside one by one before the drop is registered.
    """

    drop: Path
    action: str
    rule: str = ""
    message: str = ""
    rejected: tuple[Rejected, ...] = ()


def triage_drop(drop: Path, taken: set[str], settle_seconds: float, now: float | None = None) -> Triage:
    """Decide what to do with one inbox entry; reads nothing but metadata, the layout and the manifest."""
    drop = Path(drop)
    st = os.lstat(drop)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return Triage(drop, "set_aside", "not_a_folder", f"{drop.name}: a link or file, not a drop folder")
    if not _is_regular(drop / COMPLETE_MARKER):
        return Triage(drop, "waiting", "", f"{drop.name}: no {COMPLETE_MARKER} marker yet")
    if not BATCH_NAME.match(drop.name):
        return Triage(drop, "set_aside", "invalid_batch_name", "drop folder name is not a valid batch name")
    if drop.name in taken:
        return Triage(drop, "set_aside", "batch_exists", f"{drop.name}: batch already registered")
    tree = walk_drop(drop)
    age = (time.time() if now is None else now) - tree.newest_change
    if age < settle_seconds:
        return Triage(
            drop,
            "hold",
            "settling",
            f"{drop.name}: last write {max(age, 0):.0f} s ago, less than settle_seconds={settle_seconds:g}",
        )
    problems = drop_problems(tree)
    if problems:
        return Triage(drop, "set_aside", problems[0].rule, problems[0].message, tree.rejected)
    return Triage(drop, "register", rejected=tree.rejected)


def triage_inbox(
    inbox: Path, repo_root: Path, settle_seconds: float, now: float | None = None
) -> list[Triage]:
    """Triage every entry of the inbox (sorted by name; names starting with '.' or '_' are not drops)."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        return []
    raw = Path(repo_root) / "data" / "raw"
    taken = set(read_batches(Path(repo_root) / "params.yaml"))
    if raw.is_dir():
        taken |= {p.name for p in raw.iterdir() if not p.name.startswith(".") and p.is_dir()}
    out = []
    for entry in sorted(inbox.iterdir(), key=lambda p: p.name):
        if entry.name.startswith((".", "_")):
            continue
        if not entry.is_symlink() and entry.is_file():
            continue  # a stray file: never a drop, nothing is read from it
        out.append(triage_drop(entry, taken, settle_seconds, now))
    return out


def _quarantine_folder(inbox: Path, name: str) -> Path:
    base = Path(inbox) / QUARANTINE_DIR
    base.mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        candidate = base / (name if i == 0 else f"{name}.{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise DropError(f"{base}: too many set-aside folders named {name}")


def _write_reasons(folder: Path, rows: list[tuple[str, str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "rule", "message"])
    writer.writerows(rows)
    write_text_atomic(folder / "reasons.csv", buf.getvalue())


def set_aside(inbox: Path, triage: Triage) -> Path:
    """Move a whole drop (or the link standing for one) to ``<inbox>/_quarantine/<name>/files`` with a
    ``reasons.csv`` (path, rule, message); a rename moves a link itself, never its target."""
    folder = _quarantine_folder(inbox, triage.drop.name)
    rows = [(".", triage.rule, triage.message)] + [(r.rel, r.rule, r.message) for r in triage.rejected]
    _write_reasons(folder, rows)
    os.rename(triage.drop, folder / "files")
    return folder


def quarantine_entries(inbox: Path, drop: Path, rejected: tuple[Rejected, ...]) -> Path | None:
    """Move each rejected entry (a link is moved as a link) out of the drop into the quarantine folder."""
    if not rejected:
        return None
    folder = _quarantine_folder(inbox, Path(drop).name)
    _write_reasons(folder, [(r.rel, r.rule, r.message) for r in rejected])
    for r in rejected:
        target = folder / "files" / r.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(Path(drop) / r.rel, target)
    return folder


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


def _journal(raw: Path, batch: str) -> Path:
    return raw / f".{batch}.pending.json"


def _staging(raw: Path, batch: str) -> Path:
    return raw / f".{batch}.registering"


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
    ``data/raw`` and renamed only when complete. Registration refuses incomplete drops, drops holding
    links or special files (``exact retrain`` sets those aside first), invalid batch names and batches
    that already exist, so a batch once registered is immutable. A journal makes it resumable.
    """
    drop = Path(drop)
    if not BATCH_NAME.match(batch):
        raise DropError(f"batch name {batch!r} is invalid: use letters, digits, '_', '-', '.' (max 64)")
    repo_root = Path(repo_root)
    raw = repo_root / "data" / "raw"
    dest = raw / batch
    params_path = repo_root / "params.yaml"
    if batch in resume_registrations(repo_root, dvc_track=dvc_track):
        return dest  # a killed registration of this very batch, now finished
    if batch in read_batches(params_path):
        raise DropError(
            f"batch {batch!r} is already registered ({dest}); batches are immutable, pick a new name"
        )
    if dest.exists() and not drop.exists():
        # Interrupted before journals existed: the drop was moved but never tracked. Finish that job.
        return _finish(repo_root, batch, dvc_track=dvc_track)
    if dest.exists():
        raise DropError(f"{dest} already exists but is not a registered batch; remove it or pick a new name")
    if os.path.islink(drop) or not drop.is_dir():
        raise DropError(f"{drop}: not a folder (links are never followed)")
    check = check_drop(drop)
    if not check.complete:
        raise DropError(
            f"{drop}: drop is not complete (no {COMPLETE_MARKER} marker); the hospital writes it last"
        )
    if check.rejected:
        raise DropError(_rejected_message(drop, check.rejected))
    if check.problems:
        raise DropError("; ".join(check.problems))
    raw.mkdir(parents=True, exist_ok=True)
    tmp = _staging(raw, batch)
    if tmp.exists():
        shutil.rmtree(tmp)  # left over from an interrupted copy; it was never visible as a batch
    write_json_atomic(_journal(raw, batch), {"batch": batch, "drop": str(drop.resolve()), "move": move})
    moved = False
    if move:
        try:
            os.rename(drop, tmp)
            moved = True
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
    if not moved:
        shutil.copytree(drop, tmp, symlinks=True)  # links copied as links (and refused below), never followed
    late = walk_drop(tmp).rejected  # a link written into the drop after the check above
    if late:
        if moved:
            os.rename(tmp, drop)
        else:
            shutil.rmtree(tmp)
        _journal(raw, batch).unlink()
        raise DropError(_rejected_message(drop, late))
    os.replace(tmp, dest)
    if move and not moved:
        shutil.rmtree(drop)  # another filesystem: the source goes only once the copy is in place
    return _finish(repo_root, batch, dvc_track=dvc_track)


def _rejected_message(drop: Path, rejected: tuple[Rejected, ...]) -> str:
    rules = sorted({r.rule for r in rejected})
    return (
        f"{drop}: {len(rejected)} entr{'y' if len(rejected) == 1 else 'ies'} that are not regular files "
        f"(rule {', '.join(rules)}; first: {rejected[0].rel}); links are never followed: copy the files "
        "themselves into the drop (`exact retrain` sets such entries aside and registers the rest)"
    )


def _finish(repo_root: Path, batch: str, *, dvc_track: bool) -> Path:
    """The idempotent tail of a registration: ``dvc add``, list in params.yaml, remove the journal."""
    raw = repo_root / "data" / "raw"
    dest = raw / batch
    if dvc_track:
        _run([dvc_executable(), "add", "--quiet", str(dest.relative_to(repo_root))], cwd=repo_root)
    add_batch_to_params(repo_root / "params.yaml", batch)
    _journal(raw, batch).unlink(missing_ok=True)
    return dest


def resume_registrations(repo_root: Path, *, dvc_track: bool = True) -> list[str]:
    """Finish or undo every registration a killed run left behind; returns the batches it finished.

    Journal present and ``data/raw/<batch>`` in place: ``dvc add`` again (idempotent) and list the
    batch. Only the hidden staging copy present: if the drop is still where it was (a copy, or a move
    across filesystems that had not removed the source), the staging copy is removed and the drop is
    registered afresh by the normal path; if the drop is gone (a same-filesystem rename), the staging
    copy is the whole drop and is put in place.
    """
    repo_root = Path(repo_root)
    raw = repo_root / "data" / "raw"
    if not raw.is_dir():
        return []
    finished = []
    registered = set(read_batches(repo_root / "params.yaml"))
    for journal in sorted(raw.glob(".*.pending.json")):
        info = json.loads(journal.read_text(encoding="utf-8"))
        batch = str(info["batch"])
        dest, tmp, drop = raw / batch, _staging(raw, batch), Path(info["drop"])
        if batch in registered and not tmp.exists():
            journal.unlink()  # killed after params.yaml was written
            continue
        if not dest.exists() and tmp.exists():
            if os.path.lexists(drop):
                shutil.rmtree(tmp)
                journal.unlink()
                continue
            os.replace(tmp, dest)
        if not dest.exists():
            journal.unlink()  # killed before anything moved
            continue
        _finish(repo_root, batch, dvc_track=dvc_track)
        finished.append(batch)
    return finished


@contextlib.contextmanager
def workspace_lock(repo_root: Path, timeout: float = -1) -> Iterator[Path]:
    """Hold the workspace's single-writer lock (one registration/DVC writer per checkout).

    An OS file lock (``flock`` via the ``filelock`` package): the kernel releases it when the holding
    process dies, kill -9 included, so a killed run never blocks the next. ``timeout`` in seconds (-1:
    wait forever); on timeout a DropError names the holder's pid as recorded in ``<lock>.owner``.
    """
    from filelock import FileLock, Timeout

    repo_root = Path(repo_root)
    home = repo_root / ".dvc" / "tmp" if (repo_root / ".dvc").is_dir() else repo_root
    home.mkdir(parents=True, exist_ok=True)
    path = home / "exact-workspace.lock"
    owner = path.with_name(path.name + ".owner")
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        holder = owner.read_text(encoding="utf-8").strip() if owner.exists() else "unknown"
        raise DropError(
            f"{repo_root.resolve()}: workspace busy: another run ({holder}) holds {path} after waiting "
            f"{timeout:g} s; it is released when that process ends"
        ) from None
    try:
        write_text_atomic(owner, f"pid {os.getpid()}\n")
        yield path
    finally:
        lock.release()


def dvc_executable() -> str:
    """The `dvc` next to the running interpreter (the project venv need not be activated), else PATH's."""
    candidate = Path(sys.executable).with_name("dvc")
    return str(candidate) if candidate.exists() else (shutil.which("dvc") or "dvc")


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
