"""DVC stage `finetune@<name>`: fine-tune the candidate model on one task of params.yaml `finetune.tasks`.

Usage (paths come from dvc.yaml templating; ``foreach: ${finetune.tasks}`` gives ``${key}``)::

    python -m stages.finetune --params params.yaml --name consolidation_seg --model models/candidate \
        --data data/processed/build_dataset --out models/finetune/consolidation_seg \
        --metrics reports/finetune/consolidation_seg.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stages.finetune", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    # --name, not --task: `exact finetune --task` is a task kind (segmentation/classify), this is an entry
    parser.add_argument(
        "--name", required=True, help="a key of params.yaml finetune.tasks (e.g. consolidation_seg)"
    )
    parser.add_argument("--model", type=Path, required=True, help="pretrained model package")
    parser.add_argument("--data", type=Path, required=True, help="build_dataset folder or task data folder")
    parser.add_argument("--out", type=Path, required=True, help="fine-tuned package folder")
    parser.add_argument(
        "--metrics", type=Path, required=True, help="metrics JSON (reports/finetune/<name>.json)"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP threads slow shared cores
    from exact_ct.config import load_params, section
    from exact_ct.io import write_json_atomic
    from exact_ct.logs import setup_logging
    from exact_ct.transfer.config import FinetuneSectionConfig
    from exact_ct.transfer.pipeline import run_finetune

    setup_logging()
    sec = section(FinetuneSectionConfig, "finetune", args.params)
    spec, cfg = sec.task(args.name)
    params = load_params(args.params)
    used = {
        "finetune": {
            "defaults": params["finetune"].get("defaults"),
            "task": params["finetune"]["tasks"][args.name],
        }
    }
    metrics = run_finetune(
        spec.kind,
        args.model,
        args.out,
        cfg,
        data=args.data,
        labels=Path(spec.labels) if spec.labels else None,
        column=spec.target or "label",
        target=spec.target,
        max_studies=spec.max_studies,
        params_used=used,
    )
    write_json_atomic(args.metrics, {"name": args.name, **metrics})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
