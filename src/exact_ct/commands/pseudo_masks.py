"""Organ label map (schema.ORGANS ids 0-9, uint8, same grid) of one CT volume in NIfTI."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, metavar="IN.nii.gz", help="CT volume in HU (any orientation)")
    p.add_argument("output", type=Path, metavar="OUT.nii.gz", help="organ label map to write")
    p.add_argument(
        "--backend",
        choices=("intensity", "totalsegmentator"),
        default=None,
        help="default: pseudo_masks.backend of --params, else intensity",
    )
    p.add_argument("--fast", action="store_true", help="TotalSegmentator's fast (3 mm) model")
    p.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params.yaml whose pseudo_masks section is used when it exists",
    )
    p.add_argument("--qc", action="store_true", help="also print the mask QC result; exit 1 if it fails")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from exact_ct.config import section
    from exact_ct.masks import PseudoMasksConfig, make_mask
    from exact_ct.masks.qc import check, organ_volumes_ml

    if not args.input.exists():
        raise FileNotFoundError(f"{args.input}: no such file")
    params = (
        section(PseudoMasksConfig, "pseudo_masks", args.params)
        if args.params.exists()
        else PseudoMasksConfig()
    )
    if args.backend:
        params = dataclasses.replace(params, backend=args.backend)
    if args.fast:
        params = dataclasses.replace(params, totalseg=dataclasses.replace(params.totalseg, fast=True))
    labels = make_mask(args.input, args.output, params)
    print(f"wrote {args.output} ({params.backend})")
    if args.qc:
        import nibabel as nib

        affine = nib.as_closest_canonical(nib.load(str(args.output))).affine
        volumes = organ_volumes_ml(labels, affine)
        issues = check(volumes, params.qc)
        print(" ".join(f"{k}={v:.0f}ml" for k, v in volumes.items()))
        for issue in issues:
            print(f"QC {issue.rule}: {issue.message}")
        return 1 if issues else 0
    return 0
