"""Transfer with few labels on the synthetic hospital: fine-tuned from the pretrained model vs the same
network from scratch, for a lesion type held out of pretraining (Consolidation).

1. Renders studies of a synthetic hospital (exact_ct.synth.render_study) onto a small CPU model grid.
2. Pretrains the EXACT model with the project's training loop (exact_ct.training.loop.train) and its
   cpu-demo profile (four HU-window input channels, logit top-k pooling, ...) on the first 120 studies
   for 40 epochs with the 18 labels, Consolidation masked out of the loss (held
   out), unless ``--model`` names an existing package (e.g. models/candidate) on a compatible grid.
3. Fine-tunes with 5, 10 and 20 labelled studies from the pretraining pool, 3 seeds each:
   segmentation (Consolidation masks from synthetic truth, Dice on held-out test studies with the lesion)
   and classification (study-level Consolidation label, AUROC on all test studies); ``pretrained`` =
   the pretrained encoder's weights (decoders and head fresh) and the frozen pretrained model's 18
   anomaly maps at the new head (``--pretrained-opts '{"maps_input": false}'`` leaves the maps out),
   ``scratch`` = same network, random weights, no maps. Same steps (``--steps``),
   learning rate, data and seeds for both.
4. Classification by the linear probe (``classify_probe``; exact_ct.transfer.probe.fit_probe /
   apply_probe) on the same studies as the fine-tune classification (n studies, half positive, same
   seeds), AUROC on the same test studies. Study vectors (per-organ embeddings of organs 1-9 + the 18
   pooled probabilities, frozen network): ``pretrained`` = the pretrained package's network, ``scratch``
   = the same architecture with fresh weights seeded like the fine-tune scratch arm. Both arms pool
   inside the SAME organs, those the pretrained package predicts (as the fine-tune arms' region does),
   so only the features differ (probe_features_in_base_organs).
Prints one line (mean Dice ratio pretrained/scratch over the sizes, then the fine-tune and probe AUROC
ratios); the table goes to stderr and, with ``--json``, to a file. ``--variants`` also compares the
design options (docs/transfer.md) at 10 studies. ``--save-model DIR`` keeps the pretrained package so
later runs can pass ``--model DIR`` and skip pretraining.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EXACT_MODE", "test")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no busy-waiting OpenMP threads on shared cores
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402

HELD_OUT = "Consolidation"
SYNTH_SEED = 11
TASKS = ("segmentation", "classify", "classify_probe")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _render(args: tuple[int, dict]) -> dict:
    from exact_ct.dataset.grid import GridPlan, mask_to_model_grid, to_model_grid
    from exact_ct.synth import render_study

    index, plan_json, cache = args
    plan = GridPlan.from_json(plan_json)
    if cache:
        # The cache holds HU on the model grid; the input windows only enter at normalise(), so they
        # are not part of the key (changing them does not re-render).
        geometry = {k: v for k, v in plan_json.items() if k != "windows_hu"}
        tag = hashlib.sha256(json.dumps(geometry, sort_keys=True).encode()).hexdigest()[:8]
        path = Path(cache) / f"{SYNTH_SEED}-{index:04d}-{tag}.npz"
        if path.is_file():
            with np.load(path) as z:
                labels = dict(zip([str(n) for n in z["names"]], [int(v) for v in z["values"]], strict=True))
                return {
                    "index": index,
                    "image": z["image"],
                    "organs": z["organs"],
                    "mask": z["mask"],
                    "labels": labels,
                }
    s = render_study(index, SYNTH_SEED)
    image, g_aff = to_model_grid(s.hu, s.affine, plan)
    organs = mask_to_model_grid(s.organs, s.affine, g_aff, plan)
    lesion = s.lesions.get(HELD_OUT)
    mask = (
        mask_to_model_grid(lesion, s.affine, g_aff, plan)
        if lesion is not None
        else np.zeros(plan.size_xyz, np.uint8)
    )
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            image=image,
            organs=organs,
            mask=mask,
            names=np.array(list(s.labels)),
            values=np.array(list(s.labels.values())),
        )
    return {"index": index, "image": image, "organs": organs, "mask": mask, "labels": dict(s.labels)}


def pretrain(
    studies: list[dict], plan, work: Path, epochs: int, seed: int, organ_weight: float | None = None
) -> Path:
    """Write a build_dataset-like folder and run the project's training loop on it.

    ``organ_weight`` (when given) replaces the profile's organ-loss weight (start and end) for pretraining.
    """
    import pandas as pd

    from exact_ct.dataset.cache import save_npz
    from exact_ct.dataset.labels import UNCERTAIN_PREFIX
    from exact_ct.io import write_csv_atomic, write_json_atomic
    from exact_ct.schema import ABNORMALITIES
    from exact_ct.training.config import TrainConfig
    from exact_ct.training.loop import train

    ds = work / "dataset"
    rows = []
    n_val = max(2, len(studies) // 6)
    for k, st in enumerate(studies):
        sid = f"s-{st['index']:04d}"
        save_npz(ds / "cache" / f"{sid}.npz", {"image": st["image"], "organs": st["organs"]})
        row = {
            "study_id": sid,
            "patient_id": f"p-{st['index']:04d}",
            "batch": "bench",
            "split": "val" if k >= len(studies) - n_val else "train",
            "cache": f"cache/{sid}.npz",
        }
        for name in ABNORMALITIES:
            row[name] = 0 if name == HELD_OUT else int(st["labels"][name])
            # Held out: flagged uncertain in train rows, so the `mask` policy keeps it out of the loss.
            # Val rows carry a constant 0 instead (AUROC undefined, so it cannot steer model selection):
            # the training metrics crash on a label with no valid validation row.
            row[UNCERTAIN_PREFIX + name] = int(name == HELD_OUT and row["split"] == "train")
        rows.append(row)
    write_csv_atomic(ds / "index.csv", pd.DataFrame(rows))
    write_json_atomic(ds / "plan.json", plan.to_json())
    write_json_atomic(ds / "dataset.json", {"data_version": "transfer-benchmark"})
    # The project's cpu-demo training profile (params.yaml train.profiles.cpu-demo: pooling on logits,
    # k_full/k_half, pos_weight cap, lr, warm-up, organ loss, augmentation), so the benchmark transfers
    # from the model the demo trains; only the length and the machine settings are the benchmark's own.
    from exact_ct.config import load_params

    profile = {
        **load_params(REPO / "params.yaml")["train"]["profiles"]["cpu-demo"],
        "epochs": epochs,
        "workers": 0,
        "threads": 2,
        "device": "cpu",
        "amp": "none",
        "checkpoint_every_steps": 0,
        "deterministic": True,
    }
    if organ_weight is not None:
        profile["loss"] = {
            **profile["loss"],
            "organ_weight_start": organ_weight,
            "organ_weight_end": organ_weight,
        }
    cfg = TrainConfig(profile="bench", profiles={"bench": profile})
    out = work / "pretrained"
    metrics = train(cfg, ds, out, work / "reports", work / "ckpt", seed=seed)
    log(
        f"pretrained: val macro AUROC {metrics.get('val_macro_auroc')}, organ Dice {metrics.get('val_organ_dice_pseudo')}"
    )
    return out


def choose(pool_pos: list[int], pool_neg: list[int], n: int, n_pos: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, n])
    pos = list(rng.permutation(pool_pos)[: min(n_pos, len(pool_pos))])
    neg = list(rng.permutation(pool_neg)[: n - len(pos)])
    return np.sort(np.array(pos + neg, dtype=np.int64))


def run_one(kind, data, train_idx, test_idx, cfg, base, network, labels=None) -> float | None:
    from exact_ct.transfer import train as T

    net, _ = T.fit(kind, data, train_idx, cfg, base, network)
    if kind == "segmentation":
        probs = T.predict_maps(net, data, test_idx)
        return T.segmentation_metrics(probs, data.masks[test_idx, 0].numpy(), cfg.threshold)["dice"]
    p = T.classify_probs(net, data, test_idx, cfg)
    return T.classification_metrics(data.labels[test_idx], p, cfg.threshold)["auroc"]


def save_model(src: Path, dest: Path) -> None:
    """Copy the pretrained package folder to ``dest`` (via a sibling temporary folder, then a rename)."""
    dest = dest.resolve()
    if dest == Path(src).resolve():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def run_probe(vectors: np.ndarray, labels: np.ndarray, train_idx, test_idx, cfg) -> float | None:
    from exact_ct.transfer import probe as P
    from exact_ct.transfer import train as T

    probe = P.fit_probe(vectors[train_idx], labels[train_idx], cfg)
    p = P.apply_probe(probe, vectors[test_idx])
    return T.classification_metrics(labels[test_idx], p, cfg.threshold)["auroc"]


def wins(pre: list[float | None], scr: list[float | None]) -> int:
    """Seeds where the pretrained arm is strictly better (a missing value counts as no win)."""
    return sum(a is not None and b is not None and a > b for a, b in zip(pre, scr, strict=True))


def summarise(values: list[float | None]) -> tuple[float, float]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return (float(np.mean(v)), float(np.std(v))) if v else (float("nan"), float("nan"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sanity check: fewer studies, sizes 5/10, 2 seeds")
    ap.add_argument("--model", type=Path, help="use this pretrained package instead of pretraining one")
    ap.add_argument("--save-model", type=Path, help="copy the pretrained package here (reuse with --model)")
    ap.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help=f"comma-separated subset of {','.join(TASKS)} (default all; the line needs all three)",
    )
    ap.add_argument("--variants", action="store_true", help="also compare design options at 10 studies")
    ap.add_argument("--json", type=Path, help="write the table here")
    ap.add_argument("--cache", type=Path, help="keep rendered studies here between runs (development)")
    ap.add_argument("--steps", type=int, default=0, help="study-steps per fine-tuning run (0: 120, quick 60)")
    ap.add_argument("--pretrain-studies", type=int, default=0, help="pretraining pool (0: 120, quick 30)")
    ap.add_argument("--test-studies", type=int, default=0, help="test studies (0: 90, quick 16)")
    ap.add_argument("--pretrain-epochs", type=int, default=0, help="pretraining epochs (0: 40, quick 3)")
    ap.add_argument(
        "--organ-weight",
        type=float,
        default=None,
        help="organ-loss weight for pretraining (default: the cpu-demo profile's)",
    )
    ap.add_argument(
        "--pretrained-opts",
        type=json.loads,
        default={},
        help="JSON of finetune options for the pretrained arm, e.g. '{\"maps_input\": false}' (design comparisons)",
    )
    args = ap.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks or set(tasks) - set(TASKS):
        ap.error(f"--tasks: expected a subset of {','.join(TASKS)}, got {args.tasks!r}")

    import torch

    from exact_ct.dataset.grid import GridPlan, normalise
    from exact_ct.model.package import load_package
    from exact_ct.parallel import map_ordered
    from exact_ct.transfer.config import FinetuneConfig

    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    if not isinstance(args.pretrained_opts, dict) or set(args.pretrained_opts) - known:
        ap.error(f"--pretrained-opts: expected a JSON object with keys among {sorted(known)}")
    from exact_ct.transfer.data import Sample
    from exact_ct.transfer.train import prepare

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    quick = args.quick
    # 120 / 90 / 20: with 60 / 30 / 10 the test set held 4 lesion studies (Dice differences of
    # 0.05 were noise) and the pretrained model was weaker (organ Dice 0.29 vs 0.47)
    n_pretrain = args.pretrain_studies or (30 if quick else 120)
    n_test = args.test_studies or (16 if quick else 90)
    # 40 epochs, not 20: with the maps input the longer-pretrained model transferred better
    # (segmentation ratios 0.97 / 1.00 / 0.99 -> 0.96 / 1.04 / 1.03)
    pretrain_epochs = args.pretrain_epochs or (3 if quick else 40)
    sizes = (5, 10) if quick else (5, 10, 20)
    seeds = (0, 1) if quick else (0, 1, 2)
    # study-steps per fine-tuning run, whatever the size (40 was too short for either arm: at 10 studies
    # scratch Dice 0.27 -> 0.38 and pretrained 0.04 -> 0.17 with 120)
    steps = args.steps or (60 if quick else 120)
    from exact_ct.config import load_params

    # 384 x 288 x 288 mm: the chest, CPU-cheap; input channels = the cpu-demo HU windows (as build_dataset)
    windows = (
        load_params(REPO / "params.yaml")["build_dataset"]["profiles"]["cpu-demo"].get("windows_hu") or []
    )
    plan = GridPlan((12.0, 12.0, 12.0), (32, 24, 24), windows_hu=tuple(tuple(map(float, w)) for w in windows))
    if args.model is not None:
        plan = load_package(args.model).plan
    studies = list(
        map_ordered(
            _render,
            [(i, plan.to_json(), str(args.cache or "")) for i in range(n_pretrain + n_test)],
            workers=2,
            desc="render",
            progress=False,
        )
    )
    log(f"rendered {len(studies)} studies in {time.perf_counter() - t0:.0f} s")
    with tempfile.TemporaryDirectory(prefix="exact-transfer-bench-") as tmp:
        model_dir = args.model or pretrain(
            studies[:n_pretrain], plan, Path(tmp), pretrain_epochs, seed=5, organ_weight=args.organ_weight
        )
        if args.save_model is not None:
            save_model(model_dir, args.save_model)
            log(f"pretrained package copied to {args.save_model}")
        base = load_package(model_dir)
        log(f"pretrained model ready at {time.perf_counter() - t0:.0f} s")
        samples = [
            Sample(f"s{s['index']}", normalise(s["image"], base.plan), mask=s["mask"]) for s in studies
        ]
        seg = prepare(samples, base)
        cls = dataclasses.replace(
            seg, masks=None, labels=np.array([float(s["labels"][HELD_OUT]) for s in studies], np.float32)
        )
        has_lesion = [bool(s["mask"].any()) for s in studies]
        pool_pos = [i for i in range(n_pretrain) if has_lesion[i]]
        pool_neg = [i for i in range(n_pretrain) if not has_lesion[i]]
        test = np.arange(n_pretrain, n_pretrain + n_test)
        test_seg = np.array([i for i in test if has_lesion[i]])
        log(
            f"pool: {len(pool_pos)} studies with {HELD_OUT}, {len(pool_neg)} without; test: {len(test_seg)} of {len(test)} with it"
        )
        common = {"lr": 0.002, "batch_size": 2, "region": (1, 2), "threads": 2}
        # What the pretrained model gives differs, nothing else: the pretrained arm copies the pretrained
        # encoder (the decoders start fresh, as in the scratch arm: docs/transfer.md measured that copying
        # them hurts) and feeds its frozen 18 anomaly maps to the new head (small gains).
        arms = {
            "pretrained": {
                "init": "pretrained",
                "pretrained_parts": ("encoder",),
                "maps_input": True,
                **args.pretrained_opts,
            },
            "scratch": {"init": "scratch", "maps_input": False},
        }
        results: dict[str, dict] = {}
        for kind in [t for t in tasks if t != "classify_probe"]:
            data = seg if kind == "segmentation" else cls
            for n in sizes:
                for arm, opts in arms.items():
                    vals = []
                    for seed in seeds:
                        n_pos = n if kind == "segmentation" else max(1, n // 2)
                        idx = choose(pool_pos, pool_neg, n, n_pos, seed)
                        cfg = FinetuneConfig(**common, **opts, seed=seed, epochs=max(1, math.ceil(steps / n)))
                        tst = test_seg if kind == "segmentation" else test
                        vals.append(run_one(kind, data, idx, tst, cfg, base, base.network))
                    mean, sd = summarise(vals)
                    results.setdefault(kind, {}).setdefault(str(n), {})[arm] = {
                        "mean": mean,
                        "sd": sd,
                        "values": vals,
                    }
                    log(
                        f"{kind:12s} n={n:2d} {arm:10s} {mean:.3f} +- {sd:.3f}  [{time.perf_counter() - t0:.0f} s]"
                    )
        if "classify_probe" in tasks:
            from exact_ct.transfer.probe import probe_features_in_base_organs, scratch_exact_net

            assert cls.labels is not None
            # Study vectors of every study, once per arm and seed (the features are label-free); both
            # arms are pooled in the organs the pretrained package predicts.
            vectors = {("pretrained", None): probe_features_in_base_organs(cls.images, base)}
            for seed in seeds:
                vectors[("scratch", seed)] = probe_features_in_base_organs(
                    cls.images, base, scratch_exact_net(base, seed)
                )
            log(
                f"probe study vectors {vectors[('pretrained', None)].shape} [{time.perf_counter() - t0:.0f} s]"
            )
            for n in sizes:
                for arm in arms:
                    vals = []
                    for seed in seeds:
                        idx = choose(pool_pos, pool_neg, n, max(1, n // 2), seed)
                        cfg = FinetuneConfig(**common, seed=seed)
                        x = vectors[(arm, None if arm == "pretrained" else seed)]
                        vals.append(run_probe(x, cls.labels, idx, test, cfg))
                    mean, sd = summarise(vals)
                    results.setdefault("classify_probe", {}).setdefault(str(n), {})[arm] = {
                        "mean": mean,
                        "sd": sd,
                        "values": vals,
                    }
                    log(f"classify_probe n={n:2d} {arm:10s} {mean:.3f} +- {sd:.3f}")
        if args.variants:
            variants = {
                "all pretrained weights + maps (old default)": {"init": "pretrained", "maps_input": True},
                "all pretrained weights": {"init": "pretrained", "maps_input": False},
                "pretrained encoder + organ decoder": {
                    "init": "pretrained",
                    "pretrained_parts": ("encoder", "organ_decoder"),
                    "maps_input": False,
                },
                "pretrained encoder + maps": {
                    "init": "pretrained",
                    "pretrained_parts": ("encoder",),
                    "maps_input": True,
                },
                "pretrained encoder, frozen": {
                    "init": "pretrained",
                    "pretrained_parts": ("encoder",),
                    "maps_input": False,
                    "freeze_encoder": True,
                },
                "scratch weights + maps": {"init": "scratch", "maps_input": True},
            }
            n = 10
            for name, opts in variants.items():
                vals = []
                for seed in seeds:
                    idx = choose(pool_pos, pool_neg, n, n, seed)
                    cfg = FinetuneConfig(**common, **opts, seed=seed, epochs=max(1, math.ceil(steps / n)))
                    vals.append(run_one("segmentation", seg, idx, test_seg, cfg, base, base.network))
                mean, sd = summarise(vals)
                results.setdefault("variants_segmentation_n10", {})[name] = {
                    "mean": mean,
                    "sd": sd,
                    "values": vals,
                }
                log(f"variant n=10 {name:36s} Dice {mean:.3f} +- {sd:.3f}")
    log(
        "\n| task | studies | pretrained (mean +- sd) | scratch (mean +- sd) | ratio | seeds where pretrained wins |"
    )
    log("|---|---|---|---|---|---|")
    ratios: dict[str, list[float]] = {}
    names = {
        "segmentation": "segmentation (Dice)",
        "classify": "classification, fine-tune (AUROC)",
        "classify_probe": "classification, linear probe (AUROC)",
    }
    for kind in tasks:
        for n in sizes:
            r = results[kind][str(n)]
            ratio = (
                r["pretrained"]["mean"] / r["scratch"]["mean"] if r["scratch"]["mean"] > 0 else float("nan")
            )
            r["ratio"] = ratio
            r["pretrained_wins"] = wins(r["pretrained"]["values"], r["scratch"]["values"])
            ratios.setdefault(kind, []).append(ratio)
            log(
                f"| {names[kind]} | {n} | {r['pretrained']['mean']:.3f} +- {r['pretrained']['sd']:.3f} | "
                f"{r['scratch']['mean']:.3f} +- {r['scratch']['sd']:.3f} | {ratio:.2f} | "
                f"{r['pretrained_wins']} of {len(seeds)} |"
            )
    elapsed = time.perf_counter() - t0
    results["wall_s"] = round(elapsed)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float))

    def mean_ratio(kind: str) -> float:
        return float(np.nanmean(ratios[kind])) if kind in ratios else float("nan")

    pre_dice = (
        float(np.nanmean([results["segmentation"][str(n)]["pretrained"]["mean"] for n in sizes]))
        if "segmentation" in results
        else float("nan")
    )
    log(f"total {elapsed:.0f} s")
    print(
        f"transfer_pretrained_vs_scratch: {pre_dice:.3f} Dice (ratio {mean_ratio('segmentation'):.2f} vs the "
        f"same network from scratch, mean over {'/'.join(map(str, sizes))} labelled studies; AUROC ratio "
        f"{mean_ratio('classify'):.2f}; probe AUROC ratio {mean_ratio('classify_probe'):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
