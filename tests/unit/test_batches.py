"""Registering hospital drops: completeness, links and special files, malformed drops, the manifest, the
settle time, resumable registration, the workspace lock, immutability, params.yaml kept intact."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from exact_ct.batches import (
    COMPLETE_MARKER,
    MANIFEST_FILE,
    DropError,
    add_batch_to_params,
    find_complete_drops,
    quarantine_entries,
    register_drop,
    resume_registrations,
    set_aside,
    triage_inbox,
    workspace_lock,
)
from exact_ct.droptree import walk_drop


def _drop(root: Path, name: str, complete: bool = True) -> Path:
    d = root / name
    (d / "dicom" / "s1").mkdir(parents=True)
    (d / "dicom" / "s1" / "x.dcm").write_bytes(b"\0" * 10)
    (d / "reports.csv").write_text("accession_number,patient_id,findings,impression\n")
    if complete:
        (d / COMPLETE_MARKER).touch()
    return d


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(
        "# top comment\nseed: 1\nbatches: []  # registered batches\ningest:\n  workers: 2\n"
    )
    return repo


def test_only_complete_drops_are_found(tmp_path):
    _drop(tmp_path, "b2")
    _drop(tmp_path, "b1")
    _drop(tmp_path, "b3", complete=False)
    assert [p.name for p in find_complete_drops(tmp_path)] == ["b1", "b2"]


def test_register_moves_the_drop_and_lists_the_batch_keeping_comments(tmp_path):
    repo = _repo(tmp_path)
    drop = _drop(tmp_path, "incoming")
    dest = register_drop(drop, "b1", repo, dvc_track=False)
    assert dest == repo / "data" / "raw" / "b1" and (dest / "dicom" / "s1" / "x.dcm").exists()
    assert not drop.exists()
    text = (repo / "params.yaml").read_text()
    assert "# top comment" in text and yaml.safe_load(text)["batches"] == ["b1"]
    assert yaml.safe_load(text)["ingest"] == {"workers": 2}


def test_register_refuses_incomplete_drops_bad_names_and_reuse(tmp_path):
    repo = _repo(tmp_path)
    with pytest.raises(DropError, match="not complete"):
        register_drop(_drop(tmp_path, "a", complete=False), "b1", repo, dvc_track=False)
    with pytest.raises(DropError, match="invalid"):
        register_drop(_drop(tmp_path, "b"), "../evil", repo, dvc_track=False)
    register_drop(_drop(tmp_path, "c"), "b1", repo, dvc_track=False)
    with pytest.raises(DropError, match="already registered"):
        register_drop(_drop(tmp_path, "d"), "b1", repo, dvc_track=False)


def test_register_finishes_an_interrupted_registration(tmp_path):
    repo = _repo(tmp_path)
    drop = _drop(tmp_path, "x")
    (repo / "data" / "raw").mkdir(parents=True)
    drop.rename(repo / "data" / "raw" / "b1")  # moved, then killed before params were updated
    register_drop(drop, "b1", repo, dvc_track=False)
    assert yaml.safe_load((repo / "params.yaml").read_text())["batches"] == ["b1"]


def test_add_batch_is_idempotent(tmp_path):
    repo = _repo(tmp_path)
    add_batch_to_params(repo / "params.yaml", "b1")
    add_batch_to_params(repo / "params.yaml", "b1")
    assert yaml.safe_load((repo / "params.yaml").read_text())["batches"] == ["b1"]


# ------------------------------------------------------------------ hostile and faulty drops (issue 22)


def _repo_with_raw(tmp_path: Path) -> Path:
    repo = _repo(tmp_path)
    (repo / "data" / "raw").mkdir(parents=True)
    return repo


def _no_link_below(root: Path) -> bool:
    return not any(p.is_symlink() for p in root.rglob("*"))


def test_links_are_set_aside_never_followed_and_the_rest_is_registered(tmp_path):
    repo = _repo_with_raw(tmp_path)
    inbox = tmp_path / "inbox"
    drop = _drop(inbox, "b1")
    outside = tmp_path / "outside"
    (outside / "series").mkdir(parents=True)
    (outside / "series" / "secret.dcm").write_text("OUTSIDE-SECRET")
    (drop / "dicom" / "passwd.dcm").symlink_to("/etc/passwd")
    (drop / "dicom" / "environ.dcm").symlink_to("/proc/self/environ")
    (drop / "dicom" / "linked_series").symlink_to(outside / "series", target_is_directory=True)
    (drop / "dicom" / "inside.dcm").symlink_to(drop / "dicom" / "s1" / "x.dcm")  # inside: still refused
    (drop / "dicom" / "dangling.dcm").symlink_to(tmp_path / "nowhere")
    os.mkfifo(drop / "dicom" / "pipe.dcm")  # reading a FIFO would block the run

    with pytest.raises(DropError, match="symlink"):  # the explicit command refuses; nothing moves
        register_drop(drop, "b1", repo, move=False, dvc_track=False)
    assert not (repo / "data" / "raw" / "b1").exists()

    [t] = triage_inbox(inbox, repo, settle_seconds=0)
    assert t.action == "register"
    assert {(r.rel, r.rule) for r in t.rejected} == {
        ("dicom/passwd.dcm", "symlink"),
        ("dicom/environ.dcm", "symlink"),
        ("dicom/linked_series", "symlink"),
        ("dicom/inside.dcm", "symlink"),
        ("dicom/dangling.dcm", "symlink"),
        ("dicom/pipe.dcm", "not_regular_file"),
    }
    folder = quarantine_entries(inbox, drop, t.rejected)
    reasons = list(csv.DictReader((folder / "reasons.csv").open()))
    assert len(reasons) == 6 and {r["rule"] for r in reasons} == {"symlink", "not_regular_file"}
    assert (folder / "files" / "dicom" / "passwd.dcm").is_symlink()  # moved as a link
    dest = register_drop(drop, "b1", repo, dvc_track=False)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        COMPLETE_MARKER,
        "dicom/s1/x.dcm",
        "reports.csv",
    ]
    assert _no_link_below(dest)
    blob = b"".join(p.read_bytes() for p in dest.rglob("*") if p.is_file())
    assert b"root:" not in blob and b"OUTSIDE-SECRET" not in blob and b"PATH=" not in blob
    assert (outside / "series" / "secret.dcm").read_text() == "OUTSIDE-SECRET"  # the target is untouched


def test_a_linked_drop_folder_is_set_aside_and_its_target_untouched(tmp_path):
    repo = _repo_with_raw(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    target = _drop(tmp_path / "elsewhere", "real")
    (inbox / "b9").symlink_to(target, target_is_directory=True)
    [t] = triage_inbox(inbox, repo, settle_seconds=0)
    assert (t.action, t.rule) == ("set_aside", "not_a_folder")
    folder = set_aside(inbox, t)
    assert (folder / "files").is_symlink() and not (inbox / "b9").exists()
    assert (target / "reports.csv").exists()
    assert find_complete_drops(inbox) == []


def test_malformed_drops_are_set_aside_with_a_reason_and_the_others_go_on(tmp_path):
    repo = _repo_with_raw(tmp_path)
    inbox = tmp_path / "inbox"
    _drop(inbox, "a-good")
    (_drop(inbox, "b-noreports") / "reports.csv").unlink()
    shutil.rmtree(_drop(inbox, "c-noimages") / "dicom")
    (_drop(inbox, "d-linkedreports") / "reports.csv").unlink()
    (inbox / "d-linkedreports" / "reports.csv").symlink_to("/etc/passwd")
    _drop(inbox, "e-waiting", complete=False)
    _drop(inbox, "bad name!")
    register_drop(_drop(tmp_path, "x"), "f-taken", repo, dvc_track=False)
    _drop(inbox, "f-taken")
    got = {t.drop.name: (t.action, t.rule) for t in triage_inbox(inbox, repo, settle_seconds=0)}
    assert got == {
        "a-good": ("register", ""),
        "b-noreports": ("set_aside", "missing_reports"),
        "c-noimages": ("set_aside", "no_images"),
        "d-linkedreports": ("set_aside", "missing_reports"),
        "e-waiting": ("waiting", ""),
        "bad name!": ("set_aside", "invalid_batch_name"),
        "f-taken": ("set_aside", "batch_exists"),
    }
    for t in triage_inbox(inbox, repo, settle_seconds=0):
        if t.action == "set_aside":
            folder = set_aside(inbox, t)
            assert list(csv.DictReader((folder / "reasons.csv").open()))[0]["rule"] == t.rule
    assert sorted(p.name for p in (inbox / "_quarantine").iterdir()) == [
        "b-noreports",
        "bad name!",
        "c-noimages",
        "d-linkedreports",
        "f-taken",
    ]
    assert sorted(p.name for p in inbox.iterdir()) == ["_quarantine", "a-good", "e-waiting"]


def test_a_drop_still_being_written_is_held_until_it_settles(tmp_path):
    repo = _repo_with_raw(tmp_path)
    inbox = tmp_path / "inbox"
    drop = _drop(inbox, "b1")
    newest = max(max(p.lstat().st_mtime, p.lstat().st_ctime) for p in [drop, *drop.rglob("*")])
    [t] = triage_inbox(inbox, repo, settle_seconds=60, now=newest + 30)
    assert (t.action, t.rule) == ("hold", "settling")
    [t] = triage_inbox(inbox, repo, settle_seconds=60, now=newest + 61)
    assert t.action == "register"
    # A file copied with its old mtime preserved (cp -p, rsync -a) still counts by its ctime.
    late = drop / "dicom" / "s1" / "late.dcm"
    late.write_bytes(b"\0")
    os.utime(late, (1_000_000, 1_000_000))
    [t] = triage_inbox(inbox, repo, settle_seconds=60, now=time.time() + 1)
    assert t.action == "hold"


def _manifest(drop: Path) -> None:
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(drop).as_posix()}"
        for p in sorted(drop.rglob("*"))
        if p.is_file() and p.name not in (COMPLETE_MARKER, MANIFEST_FILE)
    ]
    (drop / MANIFEST_FILE).write_text("\n".join(lines) + "\n")


def test_the_optional_manifest_catches_missing_changed_and_extra_files(tmp_path):
    repo = _repo_with_raw(tmp_path)
    inbox = tmp_path / "inbox"
    for name in ("ok", "missing", "changed", "extra", "invalid"):
        d = _drop(inbox, name)
        (d / "dicom" / "s1" / "y.dcm").write_bytes(b"\1" * 10)
        _manifest(d)
    (inbox / "missing" / "dicom" / "s1" / "y.dcm").unlink()  # the copy stopped half way
    (inbox / "changed" / "dicom" / "s1" / "y.dcm").write_bytes(b"\2" * 10)
    (inbox / "extra" / "dicom" / "s1" / "z.dcm").write_bytes(b"\3")
    (inbox / "invalid" / MANIFEST_FILE).write_text("abc  ../../etc/passwd\n")
    got = {t.drop.name: (t.action, t.rule) for t in triage_inbox(inbox, repo, settle_seconds=0)}
    assert got == {
        "ok": ("register", ""),
        "missing": ("set_aside", "manifest_mismatch"),
        "changed": ("set_aside", "manifest_mismatch"),
        "extra": ("set_aside", "manifest_mismatch"),
        "invalid": ("set_aside", "manifest_invalid"),
    }
    [msg] = [t.message for t in triage_inbox(inbox, repo, 0) if t.drop.name == "missing"]
    assert "2 file(s) present, 3 listed" in msg and "1 missing" in msg


def test_registration_killed_at_any_step_is_finished_or_undone_by_the_next(tmp_path):
    repo = _repo_with_raw(tmp_path)
    raw = repo / "data" / "raw"
    # 1. killed during `dvc add`: journal and data/raw/b1 present, params.yaml not yet updated
    (raw / ".b1.pending.json").write_text(json.dumps({"batch": "b1", "drop": str(tmp_path / "gone1")}))
    _drop(raw, "b1")
    # 2. killed after the rename into the staging folder (same filesystem): the drop is gone
    (raw / ".b2.pending.json").write_text(json.dumps({"batch": "b2", "drop": str(tmp_path / "gone2")}))
    _drop(raw, ".b2.registering")
    # 3. killed while copying: the drop is still whole in the inbox, the staging copy is partial
    kept = _drop(tmp_path / "inbox", "b3")
    (raw / ".b3.pending.json").write_text(json.dumps({"batch": "b3", "drop": str(kept)}))
    (raw / ".b3.registering").mkdir()
    assert resume_registrations(repo, dvc_track=False) == ["b1", "b2"]
    assert yaml.safe_load((repo / "params.yaml").read_text())["batches"] == ["b1", "b2"]
    assert (raw / "b2" / "reports.csv").exists()
    assert sorted(p.name for p in raw.iterdir()) == ["b1", "b2"]  # journals and staging gone
    assert (kept / "reports.csv").exists()
    register_drop(kept, "b3", repo, dvc_track=False)  # registered afresh
    assert resume_registrations(repo, dvc_track=False) == []


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from exact_ct.batches import workspace_lock
with workspace_lock(Path(sys.argv[1])):
    Path(sys.argv[2]).write_text("held")
    time.sleep(120)
"""


def test_a_lock_holder_killed_with_sigkill_never_blocks_the_next_run(tmp_path):
    repo = _repo(tmp_path)
    held = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(repo), str(held)])
    try:
        deadline = time.monotonic() + 60
        while not held.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held.exists()
        with pytest.raises(DropError, match=f"pid {proc.pid}"):
            with workspace_lock(repo, timeout=0.5):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    t0 = time.monotonic()
    with workspace_lock(repo, timeout=10):
        assert time.monotonic() - t0 < 5


def test_a_path_the_os_cannot_list_is_a_named_rejected_entry(tmp_path):
    drop = _drop(tmp_path, "b1")
    fd = os.open(drop / "dicom", os.O_RDONLY)
    try:
        for _ in range(45):  # 45 levels of 100 characters: past PATH_MAX (4096) on Linux
            os.mkdir("d" * 100, dir_fd=fd)
            nxt = os.open("d" * 100, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("x.dcm", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as f:
            f.write(b"\0")
    finally:
        os.close(fd)
    tree = walk_drop(drop)
    assert [r.rule for r in tree.rejected] == ["unreadable_path"]
    assert "ENAMETOOLONG" in tree.rejected[0].message
    assert [tree.rel(p) for p in tree.files] == [COMPLETE_MARKER, "dicom/s1/x.dcm", "reports.csv"]
