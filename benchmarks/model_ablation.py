"""Fast, in-memory ablations of the model: one setting trained and scored in minutes, not an hour.

What ``benchmarks/model_learning.py`` measures through the real stages, this measures on the same network,
pooling and losses without DICOM, ingest or DVC, so that one training choice can be compared with another
on the same studies: synthetic studies are rendered (``exact_ct.synth.render_study``, demo profile), given
intensity pseudo masks, resampled onto the cpu-demo grid (6 mm, 64 x 48 x 48, the four HU windows) and
cached as npz under ``--cache`` (reused by later runs). Split by patient (0.6 train; the rest held out).
Training labels are what the synthetic reports state (hedged -> masked); the score is against the
synthetic truth: held-out macro AUROC confined by the predicted organs (and by the pseudo masks), organ
Dice against the truth, the pointing game (peak of the confined map within one voxel of the lesion,
findings with a lesion mask, Cardiomegaly excepted), and the HU-histogram baseline on the same split.

Examples (each 500-step run takes 20-35 min on one core of the shared 2-core machine)::

    python benchmarks/model_ablation.py --studies 400 --steps 500             # the confinement regions
    python benchmarks/model_ablation.py --studies 400 --steps 500 --margins 0  # home organs only
    python benchmarks/model_ablation.py --studies 400 --steps 500 --organ-weight 2,0.5,exp --average-scales

Last line: ``model_ablation: held-out macro AUROC X vs baseline Y (ratio R)``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

SEED = 11
WINDOWS = ((-1024.0, -600.0), (-1000.0, 200.0), (-160.0, 240.0), (100.0, 1100.0))
from synth_baseline import EDGES  # noqa: E402  (the baseline's HU bins: one copy, benchmarks/ is on sys.path)


def render(index: int, cache: Path, seed: int) -> str:
    """Render study ``index`` onto the cpu-demo grid with its pseudo masks and truth; returns the npz path."""
    from exact_ct.dataset.cache import save_npz
    from exact_ct.dataset.grid import GridPlan, mask_to_model_grid, to_model_grid
    from exact_ct.masks.intensity import segment
    from exact_ct.schema import ABNORMALITIES
    from exact_ct.synth import render_study

    path = cache / f"{seed}-{index:05d}.npz"
    if path.is_file():
        return str(path)
    s = render_study(index, seed, "demo", batch="ablation")
    plan = GridPlan((6.0, 6.0, 6.0), (64, 48, 48), windows_hu=WINDOWS)
    image, g = to_model_grid(s.hu, s.affine, plan)
    lesions = np.zeros((len(ABNORMALITIES), *plan.size_xyz), np.uint8)
    for name, mask in s.lesions.items():
        lesions[ABNORMALITIES.index(name)] = mask_to_model_grid(mask, s.affine, g, plan)
    reported = [-2 if s.reported_labels.get(n) is None else s.reported_labels[n] for n in ABNORMALITIES]
    save_npz(
        path,
        {
            "image": image,
            "organs": mask_to_model_grid(segment(s.hu, s.affine), s.affine, g, plan),
            "truth_organs": mask_to_model_grid(s.organs, s.affine, g, plan),
            "lesions": lesions,
            "labels": np.array([s.labels[n] for n in ABNORMALITIES], np.int8),
            "reported": np.array(reported, np.int8),
            "patient": np.frombuffer(s.patient_id.encode(), np.uint8),
        },
    )
    return str(path)


def baseline(images, organs, y_train, y_test, train, test) -> float:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = []
    for img, org in zip(images, organs, strict=True):
        rows = []
        for c in range(1, 10):
            h = np.histogram(img[org == c], bins=EDGES)[0].astype(float)
            rows.append(h / max(h.sum(), 1.0))
        feats.append(np.concatenate(rows))
    X = np.stack(feats)
    aucs = []
    for k in range(y_train.shape[1]):
        yt, ye = y_train[train, k] > 0.5, y_test[test, k] > 0.5
        if yt.sum() < 2 or yt.all() or not 0 < ye.sum() < len(ye):
            continue
        m = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(X[train], yt)
        aucs.append(roc_auc_score(ye, m.predict_proba(X[test])[:, 1]))
    return float(np.mean(aucs))


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - one linear experiment
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    from exact_ct.dataset.cache import load_npz
    from exact_ct.dataset.grid import GridPlan, normalise
    from exact_ct.dataset.split import SplitConfig, assign_split
    from exact_ct.model.config import NetworkConfig
    from exact_ct.model.losses import OrganLoss, pos_weight_from_labels, weighted_bce
    from exact_ct.model.network import ExactNet
    from exact_ct.model.pooling import OrganConfinedMILPool
    from exact_ct.parallel import map_ordered
    from exact_ct.schema import ABNORMALITIES, CONFINEMENT_REGIONS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=400)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--cache", type=Path, default=Path(".cache/model_ablation"))
    ap.add_argument("--data-seed", type=int, default=SEED)
    ap.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    ap.add_argument("--workers", type=int, default=2, help="rendering processes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.008)
    ap.add_argument("--organ-weight", default="10,10,linear", help="start,end,linear|exp over the run")
    ap.add_argument("--average-scales", action="store_true")
    ap.add_argument("--margins", type=float, default=None, help="one margin (mm) for every region")
    ap.add_argument("--lung-margin", type=float, default=None, help="margin (mm) of the lung-cavity regions")
    ap.add_argument(
        "--home-organs",
        action="store_true",
        help="home organs only (schema.DEFAULT_ORGAN_REGIONS), no margins",
    )
    ap.add_argument("--k", default="16,4,3", help="k_full,k_half,k_test")
    ap.add_argument("--quick", action="store_true", help="40 studies, 20 steps: a wiring check")
    a = ap.parse_args(argv)
    if a.quick:
        a.studies, a.steps = 40, 20
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    a.cache.mkdir(parents=True, exist_ok=True)
    paths = list(
        map_ordered(partial(render, cache=a.cache, seed=a.data_seed), range(a.studies), workers=a.workers,
                    desc="render")
    )  # fmt: skip
    plan = GridPlan((6.0, 6.0, 6.0), (64, 48, 48), windows_hu=WINDOWS)
    split = SplitConfig(train=0.6, val=0.15, test=0.25, salt="model-ablation")
    X, ORG, TO, LES, imgs, rep, truth, splits = [], [], [], [], [], [], [], []
    for p in paths:
        d = load_npz(p)
        imgs.append(d["image"])
        X.append(torch.from_numpy(normalise(d["image"], plan).astype(np.float32)))
        ORG.append(torch.from_numpy(d["organs"].astype(np.int64)))
        TO.append(d["truth_organs"])
        LES.append(d["lesions"])
        rep.append(d["reported"])
        truth.append(d["labels"])
        splits.append(assign_split(bytes(d["patient"]).decode(), split))
    R, Y = np.stack(rep).astype(np.float32), np.stack(truth)
    tr = np.flatnonzero(np.array(splits) == "train")
    te = np.flatnonzero(np.array(splits) != "train")
    lab = (R != 0) & (R != -2)
    unc = R == -1

    regions, margins = None, None
    if a.home_organs:
        from exact_ct.schema import DEFAULT_ORGAN_REGIONS

        regions = {k: list(v) for k, v in DEFAULT_ORGAN_REGIONS.items()}
        margins = {n: 0.0 for n in ABNORMALITIES}
    elif a.margins is not None:
        margins = {n: a.margins for n in ABNORMALITIES}
    elif a.lung_margin is not None:
        margins = {n: (a.lung_margin if 1 in ids else mm) for n, (ids, mm) in CONFINEMENT_REGIONS.items()}
    k_full, k_half, k_test = (int(v) for v in a.k.split(","))
    w0, w1, decay = a.organ_weight.split(",")
    net = ExactNet(
        NetworkConfig(channels=(16, 16, 32, 64), norm="instance", organ_deep_supervision=2),
        in_channels=len(WINDOWS),
    )
    pool = OrganConfinedMILPool(regions, on_logits=True, margins_mm=margins, spacing_mm=(6.0, 6.0, 6.0))
    organ_loss = OrganLoss()
    pw = torch.tensor(pos_weight_from_labels(lab[tr], ~unc[tr], 5.0), dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    warm = 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warm
            if s < warm
            else 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, a.steps - warm))))
        ),
    )

    def onehot(o: torch.Tensor) -> torch.Tensor:
        return F.one_hot(o, 10).permute(0, 4, 1, 2, 3).float()

    t0, step = time.perf_counter(), 0
    while step < a.steps:
        order = rng.permutation(tr)
        for b in range(0, len(order) - 1, 2):
            if step >= a.steps:
                break
            ids = order[b : b + 2]
            x = torch.stack([X[i] for i in ids])
            o = torch.stack([ORG[i] for i in ids])
            jitter = torch.rand(2, 2, 1, 1, 1, 1) * 0.1 - 0.05
            x = x * (1 + jitter[0]) + jitter[1]
            out = net(x)
            t = step / a.steps
            w_org = (max(float(w1), float(w0) * math.exp(-10 * t)) if decay == "exp"
                     else float(w0) + (float(w1) - float(w0)) * t)  # fmt: skip
            region = onehot(o)
            tgt, msk = (
                torch.tensor(lab[ids], dtype=torch.float32),
                torch.tensor(~unc[ids], dtype=torch.float32),
            )
            lf = weighted_bce(pool(out.anomaly_logits_full, region, k_full), tgt, msk, pw)
            lh = weighted_bce(pool(out.anomaly_logits_half, region, k_half), tgt, msk, pw)
            l_cls = (lf + lh) / 2 if a.average_scales else lf + lh
            loss = l_cls + w_org * organ_loss(out.organ_logits, o[:, None], out.organ_logits_deep)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(f"step {step}: MIL {l_cls.item():.3f}, {(time.perf_counter() - t0) / step:.2f} s/step",
                      file=sys.stderr, flush=True)  # fmt: skip

    net.eval()
    P, P_pseudo, hits = np.zeros((len(te), 18)), np.zeros((len(te), 18)), []
    dice = np.zeros((9, 2))
    with torch.no_grad():
        for j, i in enumerate(te):
            out = net(X[i][None])
            organ_probs = out.organ_logits.softmax(1)
            P[j] = pool(out.anomaly_logits_full, organ_probs, k_test)[0].numpy()
            P_pseudo[j] = pool(out.anomaly_logits_full, onehot(ORG[i][None]), k_test)[0].numpy()
            pred = organ_probs[0].argmax(0).numpy()
            for c in range(1, 10):
                dice[c - 1] += [
                    2 * ((pred == c) & (TO[i] == c)).sum(),
                    (pred == c).sum() + (TO[i] == c).sum(),
                ]
            conf = (out.anomaly_logits_full.sigmoid() * pool.region(organ_probs, pred.shape))[0].numpy()
            for k, name in enumerate(ABNORMALITIES):
                if Y[i, k] and LES[i][k].any() and name != "Cardiomegaly":
                    peak = np.unravel_index(conf[k].argmax(), conf[k].shape)
                    near = tuple(slice(max(0, c - 1), c + 2) for c in peak)
                    hits.append(bool(LES[i][k][near].any()))

    def aucs(p: np.ndarray) -> dict[str, float]:
        return {n: float(roc_auc_score(Y[te, k], p[:, k])) for k, n in enumerate(ABNORMALITIES)
                if 0 < Y[te, k].sum() < len(te)}  # fmt: skip

    per, per_pseudo = aucs(P), aucs(P_pseudo)
    macro, macro_pseudo = float(np.mean(list(per.values()))), float(np.mean(list(per_pseudo.values())))
    base = baseline(imgs, [o.numpy() for o in ORG], lab.astype(float), Y, tr, te)
    print(f"{a.studies} studies: {len(tr)} train, {len(te)} held out; {a.steps} steps", file=sys.stderr)
    print(json.dumps({k: round(v, 3) for k, v in per.items()}), file=sys.stderr)
    print(
        f"macro AUROC {macro:.3f} (pseudo-mask confinement {macro_pseudo:.3f}); organ Dice vs truth "
        f"{float((dice[:, 0] / np.maximum(dice[:, 1], 1)).mean()):.3f}; pointing game "
        f"{np.mean(hits) if hits else float('nan'):.3f} over {len(hits)} findings",
        file=sys.stderr,
    )
    print(
        f"model_ablation: held-out macro AUROC {macro:.3f} vs baseline {base:.3f} (ratio {macro / base:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
