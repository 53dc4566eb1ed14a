"""The `exact` command line: one console script whose subcommands are thin adapters over the library.

Each subcommand lives in ``exact_ct.commands.<module>`` and exposes ``configure(parser)`` and
``run(args) -> int``. Command modules import only light modules at top level so that ``exact --help``
stays fast; heavy imports (torch, spaCy, pydicom) happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from exact_ct import __version__

#: subcommand -> (module under exact_ct.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("synth", "write a synthetic hospital drop (DICOM + reports) and its ground truth"),
    "register": ("register", "move a complete hospital drop into data/raw/<batch> and track it with DVC"),
    "ingest": ("ingest", "DICOM/NIfTI drop -> canonical de-identified volumes, manifest, quarantine"),
    "label-reports": ("label_reports", "label free-text reports for the 18 abnormalities"),
    "fit-labeller": ("fit_labeller", "fit the report labeller's learned layer on manually labelled reports"),
    "pseudo-masks": ("pseudo_masks", "organ label map (ids 0-9) for one CT volume"),
    "import-totalseg": ("import_totalseg", "convert a TotalSegmentator `total` label map to our organ map"),
    "infer": ("infer", "run a published model on one study: probabilities, organs, anomaly maps, report"),
    "finetune": ("finetune", "fine-tune the pretrained model on a new task with few labels"),
    "embed": ("embed", "per-organ embedding vectors of one study"),
    "models": ("models", "list the model registry's versions, promote one to champion, roll back"),
    "retrain": ("retrain", "run the Prefect retrain flow once on the inbox"),
    "serve": ("serve", "serve the retrain flow on a cron schedule"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exact", description="EXACT-CT: explainable anomaly-aware 3D chest CT pipeline."
    )
    parser.add_argument("--version", action="version", version=f"exact-ct {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"exact_ct.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip())
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from exact_ct.logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("exact: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        if args.verbose:
            raise
        print(f"exact {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
