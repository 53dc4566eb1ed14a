"""Honesty check of the synthetic findings: a trivial baseline must not solve them.

Logistic regression on organ-wise HU histograms computed with the TRUE organ masks, cross-validated
over ~200 demo studies. Prints the macro AUROC (stdout, one line) and per-label AUROC (stderr).
Anchor: 0.85 macro AUROC, above which the synthetic findings would be too easy to be a useful test.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

import numpy as np

from exact_ct.schema import ABNORMALITIES

ANCHOR = 0.85
#: HU bin edges: air, emphysema, lung, ground glass, fat, fluid, soft tissue, contrast, bone, metal
EDGES = np.array(
    [
        -1025,
        -950,
        -900,
        -850,
        -800,
        -700,
        -600,
        -450,
        -300,
        -150,
        -50,
        0,
        25,
        50,
        80,
        130,
        200,
        350,
        600,
        1200,
        2500,
        3072,
    ]
)


def features(index: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from exact_ct.synth import render_study

    s = render_study(index, seed, "demo")
    feats = []
    for organ in range(1, 10):
        vals = s.hu[s.organs == organ]
        h = np.histogram(vals, bins=EDGES)[0].astype(np.float64)
        feats.append(h / max(h.sum(), 1.0))
    return np.concatenate(feats), np.array([s.labels[k] for k in ABNORMALITIES])


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from exact_ct.parallel import map_ordered

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="80 studies")
    args = ap.parse_args(argv)
    n = 80 if args.quick else args.studies
    t0 = time.perf_counter()
    rows = list(
        map_ordered(
            partial(features, seed=args.seed), range(n), workers=args.workers, desc="baseline", progress=False
        )
    )
    X = np.stack([r[0] for r in rows])
    Y = np.stack([r[1] for r in rows])
    print(f"rendered {n} studies in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    aucs = []
    for j, name in enumerate(ABNORMALITIES):
        y = Y[:, j]
        pos = int(y.sum())
        if pos < 5 or pos > n - 5:
            print(f"  {name}: skipped ({pos} positives of {n})", file=sys.stderr)
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
        p = cross_val_predict(model, X, y, cv=cv, method="predict_proba")[:, 1]
        auc = float(roc_auc_score(y, p))
        aucs.append(auc)
        print(f"  {name}: AUROC {auc:.3f} (prevalence {pos / n:.2f})", file=sys.stderr)
    macro = float(np.mean(aucs))
    print(
        f"synth_baseline_auroc: {macro:.3f} macro AUROC (ratio {macro / ANCHOR:.2f} vs anchor 0.85 = too easy above)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
