"""Benchmark: per-study throughput on a local Dask cluster, 1 vs 2 workers, vs the local process pool.

Two per-study stages' library calls, each run with params ``parallel.backend: processes`` (the anchor:
``workers`` 1 and 2) and ``dask`` (a local cluster of 1 and 2 worker processes): report labelling
(``label_table``, CT-RATE reports replicated to --reports rows, reports/s) and pseudo masks
(``run_batch``, intensity backend, on a synthetic hospital ingested once, studies/s). Dask is timed cold
(a fresh cluster, started inside the timing, as a stage run without ``dask_scheduler`` does) and warm (a
second run on the same cluster, as a running cluster serves every stage after its first). Outputs of
every run are compared byte for byte with the anchor's. Wall time: run it on an otherwise idle machine
(the load average is printed beside each figure) or raise --repeat.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REPEAT = 1
CTRATE = REPO / ".." / "shared" / "data" / "reports" / "ctrate_manual_labels" / "train.csv"


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def _own_cpu() -> float:
    """CPU seconds of this process and of its children that have exited (the process pool's workers)."""
    return sum(
        u.ru_utime + u.ru_stime
        for u in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def _cpu_now() -> float:
    return time.process_time()


def timed(label: str, fn: Callable[[Path], None], out: Path, client: Any = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the fastest of REPEAT runs, each into a fresh ``out``. CPU counts this
    process, its exited children and, with ``client``, the Dask workers: unlike wall time, other people's
    jobs on a shared machine do not change it."""
    best = (float("inf"), float("inf"))
    for _ in range(REPEAT):
        shutil.rmtree(out, ignore_errors=True)
        workers0 = sum(client.run(_cpu_now).values()) if client is not None else 0.0
        c0, t0 = _own_cpu(), time.perf_counter()
        fn(out)
        wall, cpu = time.perf_counter() - t0, _own_cpu() - c0
        if client is not None:
            cpu += sum(client.run(_cpu_now).values()) - workers0
        best = min(best, (wall, cpu))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cpu_text = f", {best[1]:.1f} CPU-s" if client is not None or "processes" in label else ""
    print(f"  {label}: {best[0]:.1f} s{cpu_text} (load average {load})", file=sys.stderr, flush=True)
    return best


def _bind(run: Callable[[Path, int], None], workers: int) -> Callable[[Path], None]:
    return lambda out: run(out, workers)


def measure(name: str, run: Callable[[Path, int], None], tmp: Path) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per configuration: processes 1/2 workers, dask 1/2 workers cold and warm."""
    from distributed import Client, LocalCluster

    from exact_ct.parallel import DASK_ENV, ParallelConfig, use_backend

    secs: dict[str, tuple[float, float]] = {}
    digests: dict[str, str] = {}
    for w in (1, 2):
        out = tmp / f"{name}-processes-{w}"
        secs[f"processes-{w}"] = timed(f"{name} processes, {w} workers", _bind(run, w), out)
        digests[f"processes-{w}"] = digest(out)
    for w in (1, 2):
        cold = tmp / f"{name}-dask-{w}-cold"

        def cold_run(o: Path, w: int = w) -> None:
            with use_backend(ParallelConfig(backend="dask", dask_workers=w)):
                run(o, w)

        secs[f"dask-{w}-cold"] = timed(f"{name} dask, {w} workers, fresh cluster", cold_run, cold)
        digests[f"dask-{w}-cold"] = digest(cold)
        kw = {"n_workers": w, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
        with LocalCluster(**kw) as cluster, Client(cluster) as client:
            # EXACT_DASK_ADDRESS sends each map to this running cluster
            os.environ[DASK_ENV] = cluster.scheduler_address
            try:
                for lap in ("first", "warm"):
                    out = tmp / f"{name}-dask-{w}-{lap}"
                    label = f"{name} dask, {w} workers, running cluster ({lap} run)"
                    secs[f"dask-{w}-{lap}"] = timed(label, _bind(run, w), out, client)
                    digests[f"dask-{w}-{lap}"] = digest(out)
            finally:
                del os.environ[DASK_ENV]
    different = sorted(k for k, v in digests.items() if v != digests["processes-1"])
    if different:
        raise SystemExit(f"{name}: outputs differ from the process pool's: {different}")
    return secs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (the fastest counts)")
    parser.add_argument("--quick", action="store_true", help="600 reports, 4 studies")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    if args.quick:
        args.reports, args.studies = 600, 4
    os.environ.setdefault("EXACT_MODE", "test")  # synthetic data only: the public demo pseudonym key
    os.environ.pop("EXACT_DASK_ADDRESS", None)

    from exact_ct.ingest import IngestConfig, ingest_drop
    from exact_ct.masks import PseudoMasksConfig
    from exact_ct.masks.batch import run_batch
    from exact_ct.reports.batch import LabelConfig, label_table
    from exact_ct.synth import DropConfig, write_drop

    with open(CTRATE, encoding="utf-8", newline="") as f:
        texts = [row["report_text"] for row in csv.DictReader(f)]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        reports = tmp / "reports.csv"
        with open(reports, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["study_id", "findings", "impression"])
            w.writerows([f"s-{i:06d}", texts[i % len(texts)], ""] for i in range(args.reports))

        def label(out: Path, workers: int) -> None:
            out.mkdir(parents=True)
            label_table(reports, out / "labels.csv", evidence_out=out / "evidence.csv",
                        config=LabelConfig(workers=workers))  # fmt: skip

        print(f"parse_reports: {args.reports} reports", file=sys.stderr)
        lab = measure("parse_reports", label, tmp)

        write_drop(
            tmp / "synth", DropConfig(studies=args.studies, seed=5, batch="bench"), workers=2, progress=False
        )
        ingest_drop(tmp / "synth" / "drop", tmp / "ingest", IngestConfig(workers=2), progress=False)

        def masks(out: Path, workers: int) -> None:
            run_batch(tmp / "ingest", out, PseudoMasksConfig(workers=workers))

        print(f"pseudo_masks: {args.studies} studies", file=sys.stderr)
        msk = measure("pseudo_masks", masks, tmp)

    for name, secs, n, unit in (("parse_reports", lab, args.reports, "reports/s"),
                                ("pseudo_masks", msk, args.studies, "studies/s")):  # fmt: skip
        rate = {k: n / v[0] for k, v in secs.items()}
        print(
            f"{name}: processes 1 -> 2 workers {rate['processes-1']:.2f} -> {rate['processes-2']:.2f} {unit}; "
            f"dask fresh cluster {rate['dask-1-cold']:.2f} -> {rate['dask-2-cold']:.2f}; running cluster "
            f"{rate['dask-1-warm']:.2f} -> {rate['dask-2-warm']:.2f}; per CPU-second: processes "
            f"{n / secs['processes-2'][1]:.2f}, dask {n / secs['dask-2-warm'][1]:.2f} (outputs byte-identical)",
            file=sys.stderr,
        )
    print(
        f"dask_scaling: 2 Dask workers (running cluster) {args.reports / lab['dask-2-warm'][0]:.0f} reports/s, "
        f"{args.studies / msk['dask-2-warm'][0]:.2f} studies/s: 1 -> 2 workers "
        f"x{lab['dask-1-warm'][0] / lab['dask-2-warm'][0]:.2f} and x{msk['dask-1-warm'][0] / msk['dask-2-warm'][0]:.2f} "
        f"(process pool x{lab['processes-1'][0] / lab['processes-2'][0]:.2f} and "
        f"x{msk['processes-1'][0] / msk['processes-2'][0]:.2f}); CPU per item ratio vs the 2-process pool "
        f"{lab['dask-2-warm'][1] / lab['processes-2'][1]:.2f} and {msk['dask-2-warm'][1] / msk['processes-2'][1]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
