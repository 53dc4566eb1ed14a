"""Convert an existing TotalSegmentator `total` output (v2 ids) into the organ label map (ids 0-9)."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "labelmap", type=Path, metavar="TOTALSEG_LABELMAP.nii.gz", help="TotalSegmentator multilabel output"
    )
    p.add_argument("output", type=Path, metavar="OUT.nii.gz", help="organ label map to write")
    p.add_argument(
        "--ct",
        type=Path,
        default=None,
        help="the CT it was computed from: gives the true body outline and pleural effusions",
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from exact_ct.io import load_canonical, save_label_map, spacing_from_affine
    from exact_ct.masks.totalseg import organs_from_totalseg
    from exact_ct.schema import organ_labels

    if not args.labelmap.exists():
        raise FileNotFoundError(f"{args.labelmap}: no such file")
    seg, affine = load_canonical(args.labelmap)
    hu = None
    if args.ct is not None:
        hu, ct_affine = load_canonical(args.ct)
        if hu.shape != seg.shape or not np.allclose(ct_affine, affine, atol=1e-3):
            raise ValueError(
                f"{args.ct}: grid differs from {args.labelmap} (shape {hu.shape} vs {seg.shape})"
            )
    labels = organs_from_totalseg(np.asarray(seg), spacing_from_affine(affine), hu=hu)
    save_label_map(labels, affine, args.output, organ_labels())
    print(f"wrote {args.output}")
    return 0
