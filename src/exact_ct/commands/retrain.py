"""Run the Prefect `retrain` flow once: register complete inbox drops, rerun what is stale, publish."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inbox", type=Path, default=None, help="drops folder (default: <repo>/data/inbox)")
    p.add_argument(
        "--repo", type=Path, default=Path("."), help="project checkout (default: current directory)"
    )
    p.add_argument("--no-push", action="store_true", help="skip `dvc push` at the end")
    p.add_argument(
        "--no-commit",
        action="store_true",
        help="leave dvc.lock, params.yaml, .dvc files and metrics uncommitted (default: retrain.git_commit)",
    )


def import_flows(repo: Path):
    """Flows live beside the library in the checkout (imports go flows -> stages -> exact_ct)."""
    root = repo.resolve()
    if not (root / "flows" / "retrain.py").exists():
        raise FileNotFoundError(f"{root}: not an EXACT-CT checkout (no flows/retrain.py); use --repo")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from flows import retrain

    return retrain


def run(args: argparse.Namespace) -> int:
    module = import_flows(args.repo)
    result = module.retrain(
        repo=str(args.repo.resolve()),
        inbox=str(args.inbox) if args.inbox else None,
        push=not args.no_push,
        commit=False if args.no_commit else None,
    )
    print(f"retrain: {result['status']}; new batches: {', '.join(result['batches']) or 'none'}")
    decision = (result.get("summary") or {}).get("publish")
    if decision:
        print(f"retrain: gate {decision.get('status')}: {decision.get('reason', '')}")
    git = result.get("git") or {}
    if git.get("commit"):
        tag = f", tag {git['tag']}" if git.get("tag") else ""
        print(f"retrain: recorded in git commit {str(git['commit'])[:12]}{tag}")
    for key, what in (
        ("held", "held (still being written)"),
        ("set_aside", "set aside (see <inbox>/_quarantine)"),
    ):
        if result.get(key):
            print(f"retrain: {what}: {', '.join(result[key])}")
    return 0
