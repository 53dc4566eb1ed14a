"""Write a synthetic hospital drop (DICOM series, reports.csv, _COMPLETE) and its ground truth apart.

DIR/drop/ is what a hospital would deliver; DIR/truth/ holds labels, reported labels, the label-noise
record, organ and lesion masks on the canonical RAS+ grid of each diagnostic series, and meta.json.
Defaults for --profile, --label-noise and --hedge-share come from the `synth` section of params.yaml
when that file exists in the working directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--studies", type=int, required=True, metavar="N", help="number of studies")
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output folder (gets drop/ and truth/)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bytes")
    p.add_argument(
        "--batch", default="", metavar="NAME", help="namespace for accession numbers, patient ids and UIDs"
    )
    p.add_argument(
        "--profile", choices=("demo", "realistic"), default=None, help="demo (downsampled, fast) or realistic"
    )
    p.add_argument(
        "--label-noise",
        type=float,
        default=None,
        metavar="F",
        help="share of present findings reports leave out",
    )
    p.add_argument(
        "--hedge-share",
        type=float,
        default=None,
        metavar="F",
        help="share of present findings reports only hedge",
    )
    p.add_argument("--workers", type=int, default=1, metavar="W", help="processes (default 1)")
    p.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file for defaults (optional)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR/drop and DIR/truth")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from exact_ct.config import from_dict, load_params
    from exact_ct.synth.drop import DropConfig, SynthConfig, write_drop

    section = load_params(args.params).get("synth") if args.params.exists() else None
    params = from_dict(SynthConfig, section, "synth")
    cfg = DropConfig(
        studies=args.studies,
        seed=args.seed,
        batch=args.batch,
        profile=args.profile or params.profile,
        label_noise=params.label_noise if args.label_noise is None else args.label_noise,
        hedge_share=params.hedge_share if args.hedge_share is None else args.hedge_share,
    )
    summary = write_drop(
        args.out, cfg, workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress
    )
    print(
        f"wrote {summary['studies']} studies ({summary['dicom_files']} DICOM files) to {args.out / 'drop'}; truth in {args.out / 'truth'}"
    )
    return 0
