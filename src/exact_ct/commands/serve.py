"""Serve the Prefect `retrain` flow on a cron schedule (a long-running process; Ctrl-C stops it)."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cron", default="0 2 * * *", help='cron schedule (default "0 2 * * *": 02:00 daily)')
    p.add_argument("--inbox", type=Path, default=None, help="drops folder (default: <repo>/data/inbox)")
    p.add_argument(
        "--repo", type=Path, default=Path("."), help="project checkout (default: current directory)"
    )
    p.add_argument("--name", default="exact-retrain", help="deployment name shown in the Prefect UI")


def run(args: argparse.Namespace) -> int:
    from exact_ct.commands.retrain import import_flows

    module = import_flows(args.repo)
    params = {"repo": str(args.repo.resolve()), "inbox": str(args.inbox) if args.inbox else None}
    module.retrain.serve(name=args.name, cron=args.cron, parameters=params)
    return 0
