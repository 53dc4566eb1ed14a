"""Run a model package on one study (DICOM folder or NIfTI): ingest QC, pseudo masks, model, grounded report.

Writes DIR/probabilities.json, organs.nii.gz, anomaly_maps.nii.gz (x, y, z, 18; channels in
exact_ct.schema.ABNORMALITIES order, organ-confined, on the study's canonical RAS+ grid), report.md
(grounded) and overlay.png; for a DICOM series also DIR/dicom/ (organ and finding SEGs on the source
slices, the report as a Comprehensive SR; exact_ct.evaluation.dicom_export). Exits 1 when ingest QC
rejects the study, naming the rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "study", type=Path, metavar="STUDY", help="DICOM folder or .nii/.nii.gz file of one chest CT"
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="MODEL_DIR",
        help="model package (e.g. models/registry/0.1.0)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument(
        "--no-pseudo-masks", action="store_true", help="skip the intensity pseudo masks (QC reference)"
    )
    p.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params.yaml whose `ingest` and `pseudo_masks` sections are used when it exists",
    )
    p.add_argument(
        "--zero-shot-seg",
        metavar="NAMES",
        help='also write zero_shot_seg.nii.gz: the named maps averaged and thresholded, e.g. "Lung opacity,'
        'Consolidation"; --zero-shot-threshold "5%%" keeps the top 5%% of their organ region, "0.3" is absolute',
    )
    p.add_argument("--zero-shot-threshold", default="5%", metavar="SPEC", help="top-k%% (e.g. 5%%) or level")
    p.add_argument(
        "--dicom-seg",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write DIR/dicom/: organ and finding DICOM SEGs referencing the source series and the report "
        "as a DICOM SR (default: on for a DICOM series; --no-dicom-seg turns it off)",
    )
    p.add_argument(
        "--dicom-jpeg2000",
        action="store_true",
        help="store the SEG frames JPEG 2000 lossless (about 25x smaller; not every SEG reader decodes it)",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from exact_ct.config import section
    from exact_ct.evaluation.infer import StudyRejected, run_infer
    from exact_ct.ingest import IngestConfig
    from exact_ct.masks import PseudoMasksConfig

    if args.zero_shot_seg:  # a misspelt name or threshold fails before the model runs
        from exact_ct.transfer.zeroshot import Threshold, parse_names

        parse_names(args.zero_shot_seg)
        Threshold.parse(args.zero_shot_threshold)
    if args.dicom_seg and Path(args.study).is_file():
        print(
            f"exact infer: --dicom-seg needs a DICOM series folder; {args.study} is a file", file=sys.stderr
        )
        return 2
    have = args.params is not None and args.params.exists()
    ingest_cfg = section(IngestConfig, "ingest", args.params) if have else IngestConfig()
    masks = section(PseudoMasksConfig, "pseudo_masks", args.params) if have else PseudoMasksConfig()
    try:
        res = run_infer(
            args.study,
            args.model,
            args.out,
            ingest_cfg=ingest_cfg,
            masks_params=masks,
            pseudo_masks=not args.no_pseudo_masks,
            device=args.device,
            dicom=args.dicom_seg,
            dicom_jpeg2000=args.dicom_jpeg2000,
        )
    except StudyRejected as e:
        print(f"exact infer: {e}", file=sys.stderr)
        return 1
    if args.zero_shot_seg:
        from exact_ct.transfer.zeroshot import write_zero_shot

        zs = write_zero_shot(args.out, args.zero_shot_seg, args.zero_shot_threshold)
        print(f"infer: zero-shot segmentation {zs['voxels']} voxels ({zs['volume_ml']} ml)")
    if res.dicom is not None:
        if res.dicom.get("written"):
            print(f"infer: DICOM SEG and SR in {args.out / 'dicom'}")
        else:
            print(f"infer: no DICOM output ({res.dicom.get('reason')})", file=sys.stderr)
    found = ", ".join(res.positives) if res.positives else "none above threshold"
    print(f"infer: {found}; wrote {res.out_dir} in {res.seconds:.1f} s")
    return 0
