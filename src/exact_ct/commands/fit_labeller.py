"""Fit the learned layer of the report labeller on manually labelled reports (0/1 per abnormality).

Writes ``learned_layer.json`` into RULESET_DIR: per-abnormality logistic regressions over the rules'
evidence, tied to the digest of the rules they were fitted on. A RULESET_DIR without rule files gets a
copy of the rules (``--rules``, default the packaged ones), so it is a complete rules folder for
``parse_reports.rules_dir`` (with ``learned_layer: true``) or ``exact label-reports --rules``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", type=Path, metavar="MANUAL.csv",
        help="reports with an id column, the report text and one 0/1 column per abnormality (CT-RATE names)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, required=True, metavar="RULESET_DIR", help="rules folder to write to"
    )
    parser.add_argument(
        "--rules", type=Path, metavar="DIR",
        help="rules to fit on (default: RULESET_DIR when it holds rule files, else the packaged rules)",
    )  # fmt: skip
    parser.add_argument("--id-column", help="id column (default as in label-reports)")
    parser.add_argument(
        "--text-column", help="report text column(s), comma-separated (default as in label-reports)"
    )
    parser.add_argument("--c", type=float, default=0.3, help="inverse L2 regularisation (default 0.3)")
    parser.add_argument(
        "--min-df", type=int, default=3, help="a feature must occur in this many reports (default 3)"
    )
    parser.add_argument(
        "--rule-scale", type=float, default=3.0,
        help="value of the rules'-label feature; larger keeps the layer closer to the rules (default 3)",
    )  # fmt: skip
    parser.add_argument(
        "--ngrams", type=int, default=0,
        help="word n-grams (1..N) of the mention sentences as features (default 0: none)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import sys

    from exact_ct.io import sha256_file, write_bytes_atomic
    from exact_ct.logs import get_logger
    from exact_ct.reports.labeller import DEFAULT_IGNORED_SECTIONS, ReportLabeller
    from exact_ct.reports.learned import LAYER_FILE, LayerConfig, fit_layer, read_manual_labels
    from exact_ct.reports.rules import DEFAULT_RULES_DIR, RULE_FILES, load_rules

    log = get_logger("exact.fit_labeller")
    out: Path = args.out
    present = [name for name in RULE_FILES if (out / name).is_file()]
    if present and len(present) != len(RULE_FILES):
        raise ValueError(f"{out}: holds {present} but not all of {list(RULE_FILES)}")
    if present and args.rules and args.rules.resolve() != out.resolve():
        raise ValueError(f"{out}: already holds rule files; --rules {args.rules} would fit other rules")
    rules_dir = out if present else (args.rules or DEFAULT_RULES_DIR)
    rules = load_rules(rules_dir)
    text_columns = [c.strip() for c in args.text_column.split(",") if c.strip()] if args.text_column else None
    data = read_manual_labels(args.input, args.id_column, text_columns)
    for q in data.quarantined:
        log.warning("%s line %d: quarantined (%s): %s", Path(q.path).name, q.line, q.rule, q.message)
    if len(data.ids) < 20:
        raise ValueError(f"{args.input}: {len(data.ids)} usable labelled reports; at least 20 are needed")
    # the rules' labels as label-reports and parse_reports compute them (default ignored sections)
    results = ReportLabeller(rules, DEFAULT_IGNORED_SECTIONS).label_many(data.texts)
    config = LayerConfig(c=args.c, min_df=args.min_df, ngrams=args.ngrams, rule_scale=args.rule_scale)
    layer = fit_layer(
        results,
        data.truth,
        rules.digest,
        config,
        info={"training_sha256": sha256_file(args.input), "quarantined": len(data.quarantined)},
    )
    if not present:
        out.mkdir(parents=True, exist_ok=True)
        for name in RULE_FILES:
            write_bytes_atomic(out / name, (Path(rules.source) / name).read_bytes())
    layer.save(out / LAYER_FILE)
    fallback = [a for a, m in zip(layer.info["positives"], layer.models, strict=True) if m.fallback]
    print(
        f"fitted the learned layer on {len(data.ids)} reports ({len(data.quarantined)} quarantined) -> "
        f"{out / LAYER_FILE}"
        + (f"; rules kept for {fallback} (too few positives or negatives)" if fallback else ""),
        file=sys.stderr,
    )
    return 0
