"""Stages on a 2-worker Dask cluster (params `parallel`) write byte-identical outputs to the process pool."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _params(path: Path, base: dict, **parallel: object) -> Path:
    path.write_text(yaml.safe_dump({**base, "parallel": parallel}))
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A running 2-worker cluster, as `dask scheduler` + `dask worker` would give (workers in this cwd)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


@pytest.fixture()
def spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Scheduler addresses that per-study maps went to (proves the work really ran on Dask)."""
    from exact_ct import parallel

    monkeypatch.delenv(parallel.DASK_ENV, raising=False)
    calls: list[str] = []
    real = parallel.map_dask

    def recording(fn, items, address, bar, **kw):
        calls.append(address)
        yield from real(fn, items, address, bar, **kw)

    monkeypatch.setattr(parallel, "map_dask", recording)
    return calls


@pytest.mark.slow
def test_parse_reports_on_a_local_dask_cluster_matches_the_process_pool(tmp_path, shared_data, spy):
    from stages.parse_reports import main

    with open(shared_data / "reports" / "ctrate_manual_labels" / "train.csv", encoding="utf-8") as f:
        texts = [row["report_text"] for _, row in zip(range(120), csv.DictReader(f), strict=False)]
    reports = tmp_path / "reports.csv"
    with open(reports, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["study_id", "findings", "impression"])
        w.writerows([f"s-{i:04d}", t, ""] for i, t in enumerate(texts))
        w.writerow(["s-long", "x " * 30_000, ""])  # quarantined (too_long) on either backend
    section = yaml.safe_load((REPO / "params.yaml").read_text())["parse_reports"]
    base = {
        "parse_reports": {
            **section,
            "workers": 2,
            "chunk_size": 20,
            "rules_dir": str(REPO / section["rules_dir"]),
        }
    }

    outs = {}
    for name, parallel in {
        "processes": {"backend": "processes"},
        "dask": {"backend": "dask", "dask_workers": 2},  # no scheduler: the stage starts its own cluster
    }.items():
        params = _params(tmp_path / f"{name}.yaml", base, **parallel)
        out = tmp_path / name
        rc = main(["--params", str(params), "--batch", "b1", "--in", str(reports),
                   "--out", str(out / "labels"), "--summary", str(out / "summary.json")])  # fmt: skip
        assert rc == 0
        outs[name] = _digest(out)

    assert len(spy) == 1  # the dask run, one map over all chunks
    assert set(outs["processes"]) == {
        "labels/labels.csv",
        "labels/evidence.csv",
        "labels/quarantine.csv",
        "summary.json",
    }
    assert outs["dask"] == outs["processes"]
    quarantine = (tmp_path / "dask" / "labels" / "quarantine.csv").read_text()
    assert "s-long" in quarantine and "too_long" in quarantine


@pytest.mark.slow
def test_build_dataset_on_a_running_cluster_matches_the_process_pool(tmp_path, cluster, spy):
    from stages.build_dataset import main
    from tests.support.toy import make_toy_interim

    make_toy_interim(tmp_path, "b1", 8, seed=3, shape=(12, 10, 8), spacing=16.0)
    base = {
        "seed": 7,
        "batches": ["b1"],
        "build_dataset": {
            "profile": "cpu-demo",
            "workers": 2,
            "split": {"train": 0.5, "val": 0.5, "test": 0.0},
            "profiles": {"cpu-demo": {"spacing_xyz_mm": [16.0, 16.0, 16.0], "size_xyz": [12, 10, 8], "size_multiple": 2}},
        },
    }  # fmt: skip
    outs = {}
    for name, parallel in {
        "processes": {"backend": "processes"},
        "dask": {"backend": "dask", "dask_scheduler": cluster.scheduler_address},
    }.items():
        params = _params(tmp_path / f"{name}.yaml", base, **parallel)
        rc = main(["--params", str(params), "--interim", str(tmp_path / "interim"),
                   "--out", str(tmp_path / name / "ds"), "--reports", str(tmp_path / name / "rep")])  # fmt: skip
        assert rc == 0
        outs[name] = _digest(tmp_path / name)

    assert spy == [cluster.scheduler_address] * 2  # fingerprint, cache
    assert len([k for k in outs["processes"] if k.startswith("ds/cache/")]) == 8
    assert outs["dask"] == outs["processes"]


@pytest.mark.slow
def test_workers_started_elsewhere_are_refused_before_any_work(tmp_path, cluster):
    from distributed import Client

    from exact_ct.parallel import ParallelConfig, map_ordered, use_backend

    cfg = ParallelConfig(backend="dask", dask_scheduler=cluster.scheduler_address)
    with use_backend(cfg):  # same cwd and code: accepted
        assert list(map_ordered(abs, [-1, -2, 3], progress=False)) == [1, 2, 3]
    with Client(cluster.scheduler_address) as client:
        client.run(os.chdir, str(tmp_path))  # as if `dask worker` were started outside the repository
        try:
            with pytest.raises(RuntimeError, match="start every worker from the repository root"):
                with use_backend(cfg):
                    pass
        finally:
            client.run(os.chdir, os.getcwd())


def test_backend_processes_is_the_default_and_an_unknown_backend_is_refused(tmp_path, monkeypatch):
    from exact_ct.config import ConfigError
    from exact_ct.parallel import ParallelConfig, current_dask_address, load_parallel, use_backend

    monkeypatch.delenv("EXACT_DASK_ADDRESS", raising=False)
    assert load_parallel(_params(tmp_path / "p.yaml", {})) == ParallelConfig()
    assert load_parallel(REPO / "params.yaml").backend == "processes"
    with use_backend(ParallelConfig()):
        assert current_dask_address() is None
    with pytest.raises(ConfigError, match="parallel.*backend"):
        load_parallel(_params(tmp_path / "q.yaml", {}, backend="ray"))
