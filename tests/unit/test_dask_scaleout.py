"""Per-study work on a local Dask cluster gives byte-identical outputs to the local process pool."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_ingest_and_masks_on_dask_match_the_local_run(tmp_path, monkeypatch):
    from distributed import LocalCluster

    from exact_ct.ingest.config import IngestConfig
    from exact_ct.ingest.pipeline import ingest_drop
    from exact_ct.masks.batch import run_batch
    from exact_ct.masks.config import PseudoMasksConfig
    from exact_ct.parallel import DASK_ENV
    from exact_ct.synth import DropConfig, write_drop

    write_drop(tmp_path / "synth", DropConfig(studies=3, seed=5, batch="dask"), workers=1, progress=False)
    drop = tmp_path / "synth" / "drop"

    monkeypatch.delenv(DASK_ENV, raising=False)
    ingest_drop(drop, tmp_path / "local" / "ingest", IngestConfig(workers=2), progress=False)
    run_batch(tmp_path / "local" / "ingest", tmp_path / "local" / "masks", PseudoMasksConfig(workers=2))

    from exact_ct import parallel

    calls: list[str] = []
    real_map_dask = parallel.map_dask

    def spy(fn, items, address, bar):
        calls.append(address)
        yield from real_map_dask(fn, items, address, bar)

    monkeypatch.setattr(parallel, "map_dask", spy)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv(DASK_ENV, cluster.scheduler_address)
        ingest_drop(drop, tmp_path / "dask" / "ingest", IngestConfig(workers=2), progress=False)
        run_batch(tmp_path / "dask" / "ingest", tmp_path / "dask" / "masks", PseudoMasksConfig(workers=2))

    assert len(calls) >= 3 and set(calls) == {cluster.scheduler_address}  # headers, studies, masks
    local, dask = _digest(tmp_path / "local"), _digest(tmp_path / "dask")
    assert len([k for k in local if k.startswith("ingest/volumes/")]) == 3
    assert len([k for k in local if k.startswith("masks/masks/")]) == 3
    assert local == dask
