"""DVC stage ingest@<batch>: data/raw/<batch> -> data/interim/ingest/<batch> (+ reports/ingest/<batch>.json)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.ingest", description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--batch", default="", help="batch name (for messages only; paths come from dvc.yaml)"
    )
    parser.add_argument(
        "--in", dest="inp", type=Path, required=True, help="the registered drop, data/raw/<batch>"
    )
    parser.add_argument("--out", type=Path, required=True, help="data/interim/ingest/<batch>")
    parser.add_argument("--summary", type=Path, required=True, help="reports/ingest/<batch>.json")
    args = parser.parse_args(argv)

    from exact_ct.config import section
    from exact_ct.ingest import IngestConfig, QuarantineShareExceeded, check_share, ingest_drop
    from exact_ct.io import write_json_atomic
    from exact_ct.logs import setup_logging
    from exact_ct.parallel import backend_from_params

    setup_logging()
    cfg = section(IngestConfig, "ingest", args.params)
    from exact_ct.privacy import KeyChangedError, MissingKeyError

    try:
        # Every batch's outputs lie side by side: a key that differs from theirs stops the stage.
        with backend_from_params(args.params):  # params `parallel`: local processes or a Dask cluster
            summary = ingest_drop(
                args.inp, args.out, cfg, progress=sys.stderr.isatty(), key_peers=args.out.parent
            )
    except (MissingKeyError, KeyChangedError) as e:
        print(f"stage ingest@{args.batch}: FAILED: {e}", file=sys.stderr)
        return 1
    write_json_atomic(args.summary, {"batch": args.batch, **summary})
    try:
        check_share(summary)
    except QuarantineShareExceeded as e:
        print(f"stage ingest@{args.batch}: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
