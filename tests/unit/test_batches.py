"""Registering hospital drops: completeness marker, immutability, params.yaml kept intact."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exact_ct.batches import (
    COMPLETE_MARKER,
    DropError,
    add_batch_to_params,
    find_complete_drops,
    register_drop,
)


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
