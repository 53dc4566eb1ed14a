"""Per-organ embedding vectors of one study (DICOM folder or NIfTI) for your own downstream models.

One vector per organ the model finds (ids 1-9), the network's multi-scale features averaged inside the
organ (docs/transfer.md). Written as .npz (organ_ids, organ_names, embeddings, voxels, layers), .csv
or .parquet (one row per organ) by the --out suffix.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", type=Path, metavar="STUDY", help="DICOM folder or .nii/.nii.gz file")
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR", help="model package")
    p.add_argument(
        "--out", type=Path, metavar="FILE", help="output .npz/.csv/.parquet (default: <study>_embeddings.npz)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params.yaml whose `ingest` section is used"
    )


def run(args: argparse.Namespace) -> int:
    import sys
    import tempfile
    from dataclasses import replace

    from exact_ct.config import section
    from exact_ct.evaluation.infer import StudyRejected, ingest_one
    from exact_ct.ingest import IngestConfig
    from exact_ct.model.package import load_package
    from exact_ct.transfer.data import case_name, image_on_grid
    from exact_ct.transfer.embed import organ_embeddings, write_embeddings

    have = args.params is not None and args.params.exists()
    cfg = section(IngestConfig, "ingest", args.params) if have else IngestConfig()
    cfg = replace(cfg, require_report=False, workers=1)
    pkg = load_package(args.model, args.device)
    out = args.out or Path(f"{case_name(args.study)}_embeddings.npz")
    with tempfile.TemporaryDirectory(prefix="exact-embed-") as tmp:
        try:
            hu, affine, _ = ingest_one(args.study, Path(tmp), cfg)
        except StudyRejected as e:
            print(f"exact embed: {e}", file=sys.stderr)
            return 1
    image, _ = image_on_grid(hu, affine, pkg.plan)
    emb = organ_embeddings(pkg, image, args.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_embeddings(emb, str(out), model_version=pkg.version)
    print(f"embed: {len(emb.organ_ids)} organs x {emb.vectors.shape[1]} dims; wrote {out}")
    return 0
