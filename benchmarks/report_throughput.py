"""Benchmark: report labelling throughput (reports/s, 2 worker processes) vs medspacy's default pipeline.

The 800 CT-RATE reports are replicated to --reports rows (default 20,000) in a temporary CSV and labelled
end to end by ``label_table`` (read, label in chunks on a process pool, write labels and evidence) in a
child process, whose peak RSS (its own and its workers') is reported; a smaller run shows that memory
does not grow with the number of reports. The anchor is ``medspacy.load()`` (PyRuSH sentences, default
ConText rules) with the same target rules, one process, timed in the same run on --default-sample
reports; our single-process rate on that sample is printed to stderr too.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CTRATE = REPO / ".." / "shared" / "data" / "reports" / "ctrate_manual_labels" / "train.csv"


def load_texts() -> list[str]:
    with open(CTRATE, encoding="utf-8", newline="") as f:
        return [row["report_text"] for row in csv.DictReader(f)]


def write_replicated(path: Path, texts: list[str], n: int) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["study_id", "report_text"])
        for i in range(n):
            w.writerow([f"r{i}", texts[i % len(texts)]])


def child(csv_path: str, workers: int, learned_layer: bool = False) -> None:
    """Label one CSV end to end; print seconds and peak RSS (MiB) as JSON."""
    from exact_ct.reports.batch import LabelConfig, label_table

    out = Path(csv_path).with_suffix(".labels.csv")
    t0 = time.perf_counter()
    summary = label_table(
        csv_path,
        out,
        evidence_out=out.with_suffix(".evidence.csv"),
        config=LabelConfig(workers=workers, learned_layer=learned_layer),
    )
    took = time.perf_counter() - t0
    self_use = resource.getrusage(resource.RUSAGE_SELF)
    kids_use = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the main process and its (joined) workers: on a shared machine wall time also
    # counts other people's jobs, CPU time does not.
    cpu = sum(u.ru_utime + u.ru_stime for u in (self_use, kids_use))
    print(
        json.dumps(
            {
                "seconds": took,
                "cpu_seconds": cpu,
                "cpu_main": self_use.ru_utime + self_use.ru_stime,
                "cpu_workers": kids_use.ru_utime + kids_use.ru_stime,
                "labelled": summary.labelled,
                "rss_main_mib": self_use.ru_maxrss / 1024,
                "rss_worker_mib": kids_use.ru_maxrss / 1024,
            }
        )
    )


def run_child(csv_path: Path, workers: int, learned_layer: bool = False) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(csv_path), "--workers", str(workers),
         *(["--learned-layer"] if learned_layer else [])],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"labelling run failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--default-sample", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4,000 reports, 100 for the default pipeline")
    parser.add_argument(
        "--learned-layer",
        action="store_true",
        help="apply the packaged learned layer (parse_reports.learned_layer)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workers, args.learned_layer)
        return 0
    if args.quick:
        args.reports, args.default_sample = 4_000, 100

    from exact_ct.reports import ReportLabeller, load_rules
    from exact_ct.reports.pipeline import build_default_nlp

    texts = load_texts()
    sample = texts[: args.default_sample]
    rules = load_rules()
    default_nlp = build_default_nlp(rules)
    list(default_nlp.pipe(sample[:5]))  # warm-up (lazy loading)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in default_nlp.pipe(sample):
        pass
    default_rate = len(sample) / (time.perf_counter() - t0)
    default_cpu = len(sample) / (time.process_time() - c0)
    ours = ReportLabeller(rules)
    ours.label_many(sample[:5])
    t0, c0 = time.perf_counter(), time.process_time()
    ours.label_many(sample)
    ours_single = len(sample) / (time.perf_counter() - t0)
    ours_cpu = len(sample) / (time.process_time() - c0)
    print(
        f"default medspacy pipeline: {default_rate:.1f} reports/s ({default_cpu:.1f} per CPU-second); ours, same "
        f"{len(sample)} reports, one process: {ours_single:.1f} reports/s ({ours_cpu:.1f} per CPU-second; "
        f"{ours_single / default_rate:.1f}x wall, {ours_cpu / default_cpu:.1f}x CPU)",
        file=sys.stderr,
    )

    with tempfile.TemporaryDirectory() as tmp:
        small_n = max(args.reports // 10, 200)
        small, big = Path(tmp) / "small.csv", Path(tmp) / "big.csv"
        write_replicated(small, texts, small_n)
        write_replicated(big, texts, args.reports)
        small_run = run_child(small, args.workers, args.learned_layer)
        big_run = run_child(big, args.workers, args.learned_layer)
    rate = big_run["labelled"] / big_run["seconds"]
    print(
        f"{small_n} reports: {small_run['seconds']:.1f} s, peak RSS main {small_run['rss_main_mib']:.0f} MiB, "
        f"worker {small_run['rss_worker_mib']:.0f} MiB; {args.reports} reports: {big_run['seconds']:.1f} s, "
        f"peak RSS main {big_run['rss_main_mib']:.0f} MiB, worker {big_run['rss_worker_mib']:.0f} MiB "
        f"({args.workers} workers, labels + evidence written"
        f"{', learned layer on' if args.learned_layer else ''}); CPU time {big_run['cpu_seconds']:.1f} s (main "
        f"{big_run['cpu_main']:.1f} s, workers {big_run['cpu_workers']:.1f} s) = "
        f"{big_run['labelled'] / big_run['cpu_seconds']:.0f} reports per CPU-second "
        f"({big_run['labelled'] / big_run['cpu_seconds'] / default_cpu:.1f}x the default pipeline's)",
        file=sys.stderr,
    )
    print(
        f"report_throughput: {rate:.0f} reports/s (ratio {rate / default_rate:.2f} vs medspacy.load() default "
        f"pipeline with the same target rules, one process, {default_rate:.1f} reports/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
