"""DVC stage parse_reports@<batch>: de-identified reports.csv -> labels, evidence and quarantine (+ summary)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.parse_reports", description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--batch", default="", help="batch name (for messages only; paths come from dvc.yaml)"
    )
    parser.add_argument(
        "--in", dest="inp", type=Path, required=True, help="data/interim/ingest/<batch>/reports.csv"
    )
    parser.add_argument("--out", type=Path, required=True, help="data/interim/parse_reports/<batch>")
    parser.add_argument("--summary", type=Path, required=True, help="reports/parse_reports/<batch>.json")
    args = parser.parse_args(argv)

    from exact_ct.config import section
    from exact_ct.io import write_json_atomic
    from exact_ct.logs import setup_logging
    from exact_ct.parallel import backend_from_params
    from exact_ct.reports.batch import LabelConfig, label_table

    setup_logging()
    cfg = section(LabelConfig, "parse_reports", args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    with backend_from_params(args.params):  # params `parallel`: local processes or a Dask cluster
        summary = label_table(
            args.inp,
            args.out / "labels.csv",
            evidence_out=args.out / "evidence.csv",
            quarantine_out=args.out / "quarantine.csv",
            id_column="study_id",
            text_columns=["findings", "impression"],
            config=cfg,
        )
    write_json_atomic(args.summary, {"batch": args.batch, **summary.as_dict()})
    print(
        f"parse_reports@{args.batch}: labelled {summary.labelled} of {summary.rows_read} reports, "
        f"{summary.quarantined} quarantined, {summary.mentions} mentions"
        + (f", learned layer changed {summary.layer_changed} labels" if cfg.learned_layer else ""),
        file=sys.stderr,
    )
    if summary.quarantine_share > cfg.max_quarantine_share:
        print(
            f"stage parse_reports@{args.batch}: FAILED: {summary.quarantined} of {summary.rows_read} reports "
            f"quarantined ({summary.quarantine_share:.0%} > max_quarantine_share {cfg.max_quarantine_share:.0%}); "
            f"see {args.out / 'quarantine.csv'}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
