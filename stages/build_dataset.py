"""DVC stage `build_dataset`: all registered batches -> model-grid cache, index with split, fingerprint, plan.

Usage (paths come from dvc.yaml templating)::

    python -m stages.build_dataset --params params.yaml --interim data/interim \
        [--synth data/synth] --out data/processed/build_dataset --reports reports/build_dataset

Reads ``data/interim/{ingest,parse_reports,pseudo_masks}/<batch>/`` for every batch listed in
params.yaml ``batches``, and, when present, synthetic truth from ``<synth>/<batch>/truth/`` (evaluation only).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stages.build_dataset", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--interim", type=Path, required=True, help="folder holding ingest/, parse_reports/, pseudo_masks/"
    )
    parser.add_argument("--synth", type=Path, default=None, help="folder holding <batch>/truth/ (optional)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reports", type=Path, required=True)
    parser.add_argument("--batch", action="append", default=None, help="override params batches (repeatable)")
    args = parser.parse_args(argv)

    from exact_ct.config import load_params, section
    from exact_ct.dataset.build import build_dataset
    from exact_ct.dataset.config import BuildDatasetConfig
    from exact_ct.logs import setup_logging
    from exact_ct.parallel import backend_from_params

    setup_logging()
    cfg = section(BuildDatasetConfig, "build_dataset", args.params)
    batches = args.batch or [str(b) for b in (load_params(args.params).get("batches") or [])]
    if not batches:
        parser.error("no batches: params.yaml `batches` is empty (register one with `exact register`)")
    with backend_from_params(args.params):  # params `parallel`: local processes or a Dask cluster
        build_dataset(cfg, batches, args.interim, args.out, args.reports, args.synth)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
