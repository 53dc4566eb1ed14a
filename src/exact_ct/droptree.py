"""List a hospital drop without following links: only regular files inside the drop are ever read.

A symbolic link (to a file or a folder, pointing inside or outside the drop, dangling or not) is never
followed: following one would copy whatever it names (``/etc/passwd``, ``/proc/self/environ`` with the
pseudonymisation key) into ``data/raw``, the DVC cache and the remote. Links and other entries that are
not regular files or folders (FIFOs, sockets, devices: reading one can block or leak) are returned as
``rejected`` with a named rule, so the caller quarantines them instead of dropping them silently.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

#: rule -> what it catches (registration and ingest quarantine these entries under the rule's name)
LINK_RULES = {
    "symlink": "a symbolic link (file or folder); links are never followed, copy the file itself into the drop",
    "not_regular_file": "a FIFO, socket or device node; only regular files are read",
    "unreadable_path": "an entry that cannot be listed or inspected (path too long, permission denied)",
}


@dataclass(frozen=True)
class Rejected:
    """An entry of the drop that is not read: ``rel`` is its path relative to the drop (posix)."""

    rel: str
    rule: str
    message: str


@dataclass(frozen=True)
class DropTree:
    """Regular files (sorted absolute paths), rejected entries, and the newest change time of any entry."""

    root: Path
    files: tuple[Path, ...]
    rejected: tuple[Rejected, ...]
    newest_change: float

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _rejected(rel: str, mode: int) -> Rejected:
    if stat.S_ISLNK(mode):
        return Rejected(rel, "symlink", "symbolic link, not followed (rule symlink)")
    return Rejected(rel, "not_regular_file", "not a regular file or folder (rule not_regular_file)")


def entry_rejection(path: Path, rel: str) -> Rejected | None:
    """The rule an entry breaks (a link, a special file, an entry lstat cannot inspect), else None."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as e:
        return _unreadable(rel, e)
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else _rejected(rel, mode)


def _unreadable(rel: str, error: OSError) -> Rejected:
    name = errno.errorcode.get(error.errno or 0, type(error).__name__)
    return Rejected(rel, "unreadable_path", f"cannot be listed or inspected ({name}) (rule unreadable_path)")


def walk_drop(root: Path) -> DropTree:
    """Walk ``root`` with ``lstat`` only (no link is ever resolved). ``root`` itself must be a real folder.

    ``newest_change`` is the largest mtime or ctime of the folder and of every entry below it: a copy
    still in progress keeps it recent, and ctime moves even when a copy tool preserves old mtimes.
    """
    root = Path(root)
    top = os.lstat(root)
    if not stat.S_ISDIR(top.st_mode):
        raise NotADirectoryError(f"{root}: not a folder (a link to a folder is not followed)")
    files: list[Path] = []
    rejected: list[Rejected] = []
    newest = max(top.st_mtime, top.st_ctime)
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            rejected.append(_unreadable(folder.relative_to(root).as_posix(), e))
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                rejected.append(_unreadable(path.relative_to(root).as_posix(), e))
                continue
            newest = max(newest, st.st_mtime, st.st_ctime)
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)
            elif stat.S_ISREG(st.st_mode):
                files.append(path)
            else:
                rejected.append(_rejected(path.relative_to(root).as_posix(), st.st_mode))
    return DropTree(root, tuple(sorted(files)), tuple(sorted(rejected, key=lambda r: r.rel)), newest)
