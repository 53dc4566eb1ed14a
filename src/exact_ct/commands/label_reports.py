"""Label free-text radiology reports for the 18 abnormalities (1 present, 0 absent, -1 uncertain, empty)."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="IN.csv", help="report table (delimiter sniffed, UTF-8)")
    parser.add_argument(
        "output", type=Path, metavar="OUT.csv", help="labels: id column + 18 abnormality columns"
    )
    parser.add_argument(
        "--id-column",
        help="id column (default: first of study_id, accession_number, AccessionNo, ..., else line)",
    )
    parser.add_argument(
        "--text-column",
        help="report text column(s), comma-separated, e.g. 'findings,impression' (joined with section headers); "
        "default: findings/impression if present, else report_text/report/text",
    )
    parser.add_argument(
        "--binary", action="store_true", help="write 0/1 by the binary policy instead of 1/0/-1/empty"
    )
    parser.add_argument(
        "--uncertain",
        choices=("0", "1", "mask"),
        default="1",
        help="binary value of an uncertain finding (default 1)",
    )
    parser.add_argument(
        "--not-mentioned",
        choices=("0", "1", "mask"),
        default="0",
        help="binary value of an unmentioned finding",
    )
    parser.add_argument(
        "--evidence", type=Path, metavar="PATH", help="also write one row per mention (with sentences)"
    )
    parser.add_argument("--quarantine", type=Path, metavar="PATH", help="rows that could not be labelled "
                        "(default: OUT.quarantine.csv, written when any row is quarantined)")  # fmt: skip
    parser.add_argument("--rules", type=Path, metavar="DIR", help="folder with sections/targets/context.json")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--max-chars", type=int, default=50_000, help="longer reports are quarantined")


def _policy_value(text: str) -> int | None:
    return None if text == "mask" else int(text)


def run(args: argparse.Namespace) -> int:
    import sys
    import tempfile

    from exact_ct.logs import get_logger
    from exact_ct.reports.batch import LabelConfig, label_table
    from exact_ct.reports.policy import BinaryPolicy

    log = get_logger("exact.label_reports")
    text_columns = [c.strip() for c in args.text_column.split(",") if c.strip()] if args.text_column else None
    config = LabelConfig(
        workers=args.workers, max_chars=args.max_chars, rules_dir=str(args.rules) if args.rules else None
    )
    policy = BinaryPolicy(_policy_value(args.not_mentioned), _policy_value(args.uncertain))
    quarantine = args.quarantine or args.output.with_name(args.output.stem + ".quarantine.csv")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "quarantine.csv"
        summary = label_table(
            args.input,
            args.output,
            evidence_out=args.evidence,
            quarantine_out=staged,
            id_column=args.id_column,
            text_columns=text_columns,
            binary=policy if args.binary else None,
            config=config,
        )
        if summary.quarantined or args.quarantine:
            from exact_ct.io import write_bytes_atomic

            write_bytes_atomic(quarantine, staged.read_bytes())
    print(
        f"labelled {summary.labelled} of {summary.rows_read} reports -> {args.output}"
        + (f"; {summary.quarantined} quarantined -> {quarantine}" if summary.quarantined else ""),
        file=sys.stderr,
    )
    if summary.quarantined:
        log.warning("quarantine by rule: %s", summary.quarantine_rules)
    return 0
