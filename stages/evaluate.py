"""DVC stage `evaluate`: model package + dataset (val and test splits) -> metrics, plots, explanations, HTML.

Usage (paths come from dvc.yaml templating)::

    python -m stages.evaluate --params params.yaml --dataset data/processed/build_dataset \
        --model models/candidate --out reports/evaluate [--interim data/interim]

Thresholds are chosen on the validation split and applied unchanged to the test split. ``--interim``
(optional) lets the montages show the ingest volumes at full resolution instead of the cached image.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stages.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dataset", type=Path, required=True, help="build_dataset output folder")
    parser.add_argument("--model", type=Path, required=True, help="model package folder written by train")
    parser.add_argument("--out", type=Path, required=True, help="reports/evaluate")
    parser.add_argument(
        "--interim", type=Path, default=None, help="data/interim (ingest volumes for montages)"
    )
    args = parser.parse_args(argv)

    from exact_ct.config import load_params, section
    from exact_ct.evaluation.config import EvaluateConfig
    from exact_ct.evaluation.pipeline import evaluate
    from exact_ct.logs import setup_logging

    setup_logging()
    cfg = section(EvaluateConfig, "evaluate", args.params)
    seed = int(cfg.seed if cfg.seed is not None else load_params(args.params).get("seed", 0))
    evaluate(cfg, args.dataset, args.model, args.out, seed=seed, interim=args.interim)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
