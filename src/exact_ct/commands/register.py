"""Move a complete hospital drop into data/raw/<batch>, track it with DVC and list it in params.yaml."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("drop", type=Path, metavar="DROP_DIR", help="a complete drop (with its _COMPLETE marker)")
    p.add_argument("--batch", required=True, help="batch name (letters, digits, _ - .)")
    p.add_argument(
        "--repo", type=Path, default=Path("."), help="repository root (default: current directory)"
    )
    p.add_argument("--copy", action="store_true", help="copy instead of move (keeps the drop in place)")
    p.add_argument(
        "--no-dvc", action="store_true", help="do not run `dvc add` (for repositories without DVC)"
    )
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the workspace lock a running `exact retrain` holds (default 60)",
    )


def run(args: argparse.Namespace) -> int:
    from exact_ct.batches import register_drop, workspace_lock

    # The same single-writer lock as the retrain flow: waits while a run holds the workspace.
    with workspace_lock(args.repo, timeout=args.lock_timeout):
        dest = register_drop(args.drop, args.batch, args.repo, move=not args.copy, dvc_track=not args.no_dvc)
    print(f"registered batch {args.batch!r} at {dest}; `dvc repro` will run its per-batch stages")
    return 0
