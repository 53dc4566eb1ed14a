"""DVC stage pseudo_masks@<batch>: data/interim/ingest/<batch> -> data/interim/pseudo_masks/<batch>."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.pseudo_masks", description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--batch", default="", help="batch name (for messages only; paths come from dvc.yaml)"
    )
    parser.add_argument("--in", dest="inp", type=Path, required=True, help="data/interim/ingest/<batch>")
    parser.add_argument("--out", type=Path, required=True, help="data/interim/pseudo_masks/<batch>")
    parser.add_argument("--summary", type=Path, required=True, help="reports/pseudo_masks/<batch>.json")
    args = parser.parse_args(argv)

    from exact_ct.config import section
    from exact_ct.io import write_json_atomic
    from exact_ct.logs import setup_logging
    from exact_ct.masks import PseudoMasksConfig
    from exact_ct.masks.batch import run_batch
    from exact_ct.parallel import backend_from_params

    setup_logging()
    params = section(PseudoMasksConfig, "pseudo_masks", args.params)
    with backend_from_params(args.params):  # params `parallel`: local processes or a Dask cluster
        summary = run_batch(args.inp, args.out, params, progress=sys.stderr.isatty())
    write_json_atomic(args.summary, {"batch": args.batch, **summary})
    print(
        f"stage pseudo_masks@{args.batch}: {summary['masks']} masks, {summary['quarantined']} quarantined "
        f"of {summary['studies']} studies ({params.backend})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
