"""Does the model learn? A synthetic hospital through the real stages, the model against a baseline.

``exact synth`` writes the hospital (DICOM + reports + ground truth); the stages ``ingest``,
``parse_reports``, ``pseudo_masks``, ``build_dataset``, ``train`` and ``evaluate`` run on it exactly as
``dvc.yaml`` runs them (same modules, same arguments, the repository's ``params.yaml`` with the batch and
any ``--set`` overrides). On the evaluate stage's held-out test split it prints: macro AUROC with its
bootstrap CI, per-finding AUROC, the pointing game, organ Dice against the synthetic truth; and the
baseline: a logistic regression per finding on organ-wise HU histograms of the same cached grid (pseudo
organs), fitted on the train split with the report labels and scored on the same test split against the
same reference. Last line: ``model_learning: model X vs baseline Y (ratio R)``.

Sizes: the default (600 studies, the params' train profile) takes 60-90 min on 2 cores; ``--quick``
(60 studies, 2 epochs) is a wiring check in minutes whose figures mean nothing. GPU: ``--set
build_dataset.profile=gpu --set train.profile=gpu`` (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BATCH = "bench"
from synth_baseline import EDGES  # noqa: E402  (the baseline's HU bins: one copy, benchmarks/ is on sys.path)


def _set(params: dict[str, Any], assignment: str) -> None:
    """``a.b.c=value`` (value parsed as YAML) into the nested params mapping."""
    key, _, raw = assignment.partition("=")
    node = params
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = yaml.safe_load(raw)


def _run(ws: Path, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    print(f"$ {' '.join(args)}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, *args], cwd=ws, env=env, check=True)
    return time.perf_counter() - t0


def baseline(ws: Path) -> dict[str, Any]:
    """Logistic regression on organ-wise HU histograms (pseudo organs, model grid): train -> test."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from exact_ct.dataset.cache import load_npz
    from exact_ct.dataset.labels import TRUTH_PREFIX
    from exact_ct.schema import ABNORMALITIES, NUM_ORGAN_CLASSES

    ds = ws / "data/processed/build_dataset"
    index = pd.read_csv(ds / "index.csv")
    feats = []
    for rel in index["cache"]:
        arrays = load_npz(ds / rel, keys=("image", "organs"))
        rows = []
        for organ in range(1, NUM_ORGAN_CLASSES):
            h = np.histogram(arrays["image"][arrays["organs"] == organ], bins=EDGES)[0].astype(float)
            rows.append(h / max(h.sum(), 1.0))
        feats.append(np.concatenate(rows))
    X = np.stack(feats)
    train, test = (index["split"] == "train").to_numpy(), (index["split"] == "test").to_numpy()
    per: dict[str, float] = {}
    for name in ABNORMALITIES:
        y_train = index.loc[train, name].fillna(0).to_numpy() > 0.5
        ref = index.loc[test, TRUTH_PREFIX + name]
        if ref.isna().all():
            ref = index.loc[test, name]
        y_test = ref.fillna(0).to_numpy() > 0.5
        if y_train.sum() < 2 or y_train.all() or not 0 < y_test.sum() < len(y_test):
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        model.fit(X[train], y_train)
        per[name] = float(roc_auc_score(y_test, model.predict_proba(X[test])[:, 1]))
    return {"macro": float(np.mean(list(per.values()))) if per else float("nan"), "per_abnormality": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=600)
    ap.add_argument("--seed", type=int, default=11, help="synthetic hospital seed")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the workspace here (default: temp)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params override")
    ap.add_argument("--quick", action="store_true", help="60 studies, 2 epochs: a wiring check")
    args = ap.parse_args(argv)
    n = 60 if args.quick else args.studies
    sets = list(args.set) + (["train.profiles.cpu-demo.epochs=2"] if args.quick else [])

    with tempfile.TemporaryDirectory(prefix="exact-model-learning-") as tmp:
        ws = (args.workdir or Path(tmp)).resolve()
        ws.mkdir(parents=True, exist_ok=True)
        params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
        params["batches"] = [BATCH]
        params.setdefault("build_dataset", {})["split"] = {"train": 0.6, "val": 0.15, "test": 0.25,
                                                          "salt": "model-learning"}  # fmt: skip
        # the workspace is not the repository: repository-relative paths in params point back into it
        params.setdefault("parse_reports", {})["rules_dir"] = str(REPO / "src/exact_ct/rules")
        for s in sets:
            _set(params, s)
        (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        times: dict[str, float] = {}
        synth = ws / "synth-work"
        if not (ws / "data/raw" / BATCH).is_dir():
            times["synth"] = _run(
                ws, "-m", "exact_ct.cli", "synth", "--studies", str(n), "--out", str(synth),
                "--seed", str(args.seed), "--batch", BATCH,
            )  # fmt: skip
            (ws / "data/raw").mkdir(parents=True, exist_ok=True)
            (ws / "data/synth" / BATCH).mkdir(parents=True, exist_ok=True)
            (synth / "drop").rename(ws / "data/raw" / BATCH)
            (synth / "truth").rename(ws / "data/synth" / BATCH / "truth")
        p = ["--params", "params.yaml", "--batch", BATCH]
        stages = [
            ("ingest", [*p, "--in", f"data/raw/{BATCH}", "--out", f"data/interim/ingest/{BATCH}",
                        "--summary", f"reports/ingest/{BATCH}.json"]),
            ("parse_reports", [*p, "--in", f"data/interim/ingest/{BATCH}/reports.csv",
                               "--out", f"data/interim/parse_reports/{BATCH}",
                               "--summary", f"reports/parse_reports/{BATCH}.json"]),
            ("pseudo_masks", [*p, "--in", f"data/interim/ingest/{BATCH}",
                              "--out", f"data/interim/pseudo_masks/{BATCH}",
                              "--summary", f"reports/pseudo_masks/{BATCH}.json"]),
            ("build_dataset", ["--params", "params.yaml", "--interim", "data/interim", "--synth", "data/synth",
                               "--out", "data/processed/build_dataset", "--reports", "reports/build_dataset"]),
            ("train", ["--params", "params.yaml", "--dataset", "data/processed/build_dataset",
                       "--out", "models/candidate", "--reports", "reports/train",
                       "--checkpoints", "data/checkpoints/train"]),
            ("evaluate", ["--params", "params.yaml", "--dataset", "data/processed/build_dataset",
                          "--model", "models/candidate", "--out", "reports/evaluate", "--interim", "data/interim"]),
        ]  # fmt: skip
        for name, stage_args in stages:
            times[name] = _run(ws, "-m", f"stages.{name}", *stage_args)
        metrics = json.loads((ws / "reports/evaluate/metrics.json").read_text())
        base = baseline(ws)

    macro = metrics["diagnosis"]["macro"]
    per = metrics["diagnosis"]["per_abnormality"]
    loc = metrics["localization"]["overall"]
    organ = metrics["organ_dice"].get("truth", {})
    print(
        f"{n} studies; test split {metrics['studies']['test']}, val {metrics['studies']['val']}",
        file=sys.stderr,
    )
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()), file=sys.stderr)
    print(f"  {'abnormality':34s} {'model':>6s} {'baseline':>8s}", file=sys.stderr)
    for name, m in per.items():
        b = base["per_abnormality"].get(name)
        mv = "-" if m.get("auroc") is None else f"{m['auroc']:.3f}"
        print(f"  {name:34s} {mv:>6s} {'-' if b is None else f'{b:.3f}':>8s}", file=sys.stderr)
    ci = macro.get("auroc_ci") or [float("nan"), float("nan")]
    print(f"macro AUROC {macro['auroc']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})", file=sys.stderr)
    print(
        f"pointing game {loc.get('pointing_game', float('nan')):.3f} over {loc.get('findings', 0)} findings "
        f"(macro over findings {loc.get('macro_pointing_game', float('nan')):.3f})",
        file=sys.stderr,
    )
    print(f"organ Dice vs truth {organ.get('mean', float('nan'))}", file=sys.stderr)
    print(
        f"model_learning: model {macro['auroc']:.3f} vs baseline {base['macro']:.3f} "
        f"(ratio {macro['auroc'] / base['macro']:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
