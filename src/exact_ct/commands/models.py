"""The model registry (models/registry): list the published versions, promote one, roll back.

``list`` prints every registered version with its bump kind, data version and test macro AUROC; the
champion (the version ``exact infer`` users and the next publish gate compare against) is starred.
``promote VERSION`` makes a registered version the champion by hand, ``rollback`` makes the previous
champion the champion again. Both only rewrite ``champion.json`` (versions are immutable) while holding
the workspace lock; ``models/registry`` is a DVC output, so record the change with
``dvc commit publish`` (and ``git commit dvc.lock``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        type=Path,
        default=Path("models/registry"),
        help="registry folder (default: models/registry)",
    )
    p.add_argument(
        "--repo", type=Path, default=Path("."), help="repository root (default: current directory)"
    )
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the workspace lock a running `exact retrain` holds (default 60)",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="registered versions, the champion starred")
    pr = sub.add_parser("promote", help="make a registered version the champion")
    pr.add_argument("version", help="a registered version, e.g. 0.2.0")
    sub.add_parser("rollback", help="make the previous champion the champion again")


def _table(reg) -> str:  # type: ignore[no-untyped-def]
    rows = reg.index()["versions"]
    if not rows:
        return f"{reg.root}: no model published yet"
    champion = reg.champion()
    head = ("", "version", "bump", "macro AUROC", "data version", "note")
    body = [
        (
            "*" if r["version"] == champion else "",
            str(r["version"]),
            str(r.get("bump", "")),
            "n/a" if r.get("macro_auroc") is None else f"{float(r['macro_auroc']):.4f}",
            str(r.get("data_version", ""))[:12],
            str(r.get("note", "")),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in (head, *body)
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n(* = champion)"


def run(args: argparse.Namespace) -> int:
    from exact_ct.batches import workspace_lock
    from exact_ct.publish.registry import Registry

    reg = Registry(args.registry)
    if args.action == "list":
        print(_table(reg))
        return 0
    with workspace_lock(args.repo, timeout=args.lock_timeout):
        if args.action == "promote":
            before = reg.champion()
            reg.set_champion(args.version)
            print(f"champion: {before or 'none'} -> {args.version}")
        else:
            before, after = reg.rollback()
            print(f"champion: {before} -> {after} (rolled back)")
    print("record it: dvc commit publish && git commit dvc.lock")
    return 0
