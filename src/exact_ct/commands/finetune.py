"""Fine-tune a pretrained model package on a new task with few labels (docs/transfer.md).

  exact finetune --model MODEL_DIR --task segmentation --data DIR --out DIR
      DIR/images/<case>.nii.gz + DIR/labels/<case>.nii.gz (binary lesion mask, any grid), or a
      build_dataset folder with --target "Consolidation" (synthetic truth lesion masks).
  exact finetune --model MODEL_DIR --task classify --labels CSV [--data DIR] --out DIR
      CSV: study_id + a 0/1 column (--label-column); volumes DIR/<study_id>.nii.gz or a `volume` column.

Writes a fine-tuned package (package.json, weights.pt or probe.json, base/), metrics.json and
quarantine.csv to --out. Settings start from params.yaml `finetune.defaults` when it exists.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR", help="pretrained model package")
    p.add_argument("--task", required=True, choices=("segmentation", "classify"))
    p.add_argument("--data", type=Path, metavar="DIR", help="labelled volumes (layout above)")
    p.add_argument("--labels", type=Path, metavar="CSV", help="classify: study_id + label column")
    p.add_argument("--label-column", default="label", help="classify: the 0/1 column (default: label)")
    p.add_argument("--target", default="", help="abnormality / index column when --data is a build_dataset")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="fine-tuned package folder")
    p.add_argument("--init", choices=("pretrained", "scratch"), help="start from the package or from scratch")
    p.add_argument(
        "--freeze-encoder", action=argparse.BooleanOptionalAction, default=None, help="keep encoder fixed"
    )
    p.add_argument(
        "--maps-input",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="feed the pretrained anomaly maps to the new head",
    )
    p.add_argument("--method", choices=("finetune", "probe"), help="classify: full fine-tune or linear probe")
    p.add_argument("--region", default=None, help="classify: organ ids confining the new map, e.g. 1,2")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--max-studies", type=int, default=0, help="use at most N labelled studies (0: all)")
    p.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params.yaml with a `finetune` section"
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from exact_ct.config import from_dict, load_params
    from exact_ct.transfer.config import FinetuneConfig, FinetuneSectionConfig
    from exact_ct.transfer.pipeline import run_finetune

    defaults: dict = {}
    if args.params is not None and args.params.exists():
        defaults = from_dict(
            FinetuneSectionConfig, load_params(args.params).get("finetune"), "finetune"
        ).defaults
    cfg = from_dict(FinetuneConfig, defaults, "finetune.defaults")
    overrides = {
        "init": args.init,
        "freeze_encoder": args.freeze_encoder,
        "maps_input": args.maps_input,
        "method": args.method,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "region": tuple(int(v) for v in args.region.split(",") if v.strip())
        if args.region is not None
        else None,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    metrics = run_finetune(
        args.task,
        args.model,
        args.out,
        cfg,
        data=args.data,
        labels=args.labels,
        column=args.label_column,
        target=args.target,
        max_studies=args.max_studies,
    )
    score = metrics.get("dice") if args.task == "segmentation" else metrics.get("auroc")
    name = "Dice" if args.task == "segmentation" else "AUROC"
    shown = "n/a" if score is None else f"{score:.3f}"
    print(
        f"finetune {args.task}: {metrics['train_studies']} train / {metrics['val_studies']} val studies, "
        f"{metrics['metrics_on']} {name} {shown}; wrote {args.out}"
    )
    return 0
