"""DVC stage `publish`: gate the evaluated candidate against the champion and register it when promoted.

Usage (paths come from dvc.yaml templating)::

    python -m stages.publish --params params.yaml --candidate models/candidate \
        --metrics reports/evaluate/metrics.json --dataset data/processed/build_dataset \
        --registry models/registry --out reports/publish

``models/registry`` must be a DVC out with ``persist: true`` (it accumulates versions across runs);
``reports/publish/decision.json`` is rewritten every run. ``dvc push`` is the flow's job, not this stage's.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stages.publish", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--candidate", type=Path, required=True, help="model package written by train")
    parser.add_argument("--metrics", type=Path, required=True, help="reports/evaluate/metrics.json")
    parser.add_argument("--registry", type=Path, required=True, help="models/registry")
    parser.add_argument("--out", type=Path, required=True, help="reports/publish")
    parser.add_argument(
        "--dataset", type=Path, default=None, help="build_dataset folder (re-scores the champion)"
    )
    args = parser.parse_args(argv)

    from exact_ct.config import load_params, section
    from exact_ct.logs import setup_logging
    from exact_ct.publish.config import PublishConfig
    from exact_ct.publish.pipeline import publish

    setup_logging()
    cfg = section(PublishConfig, "publish", args.params)
    params = load_params(args.params)
    used: dict[str, Any] = {
        k: params.get(k) for k in ("seed", "build_dataset", "train", "evaluate", "publish") if k in params
    }
    publish(
        cfg, args.candidate, args.metrics, args.registry, args.out, dataset_dir=args.dataset, params_used=used
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
