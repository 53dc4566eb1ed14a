"""Benchmark: report-label accuracy on the 800 manually labelled CT-RATE reports (+ NegEx negation F1).

Binary labels (uncertain -> 1, not mentioned -> 0, CT-RATE's convention) against CT-RATE's manual labels:

- the rules alone, on all 800 and on the two halves (even rows: the half the rules were developed
  against; odd rows: held out);
- rules + learned layer, cross-validated: 5 folds grouped so that no report is on both sides (reports with
  the same words, or of the same CT-RATE patient, share a group); each fold's layer is fitted on the
  other four and scores its own reports. Per label and macro, with the rules alone on the same folds;
- a learning curve: macro F1 of the layer fitted on 50, 100, 200, 400 reports drawn from the training
  folds (3 draws per fold), plotted to --plot (default docs/label_learning_curve.png);
- negated-vs-affirmed F1 on the NegEx annotated sentences.

The last stdout line is the macro F1 of the rules alone, as a ratio to the ~0.98 macro F1 that CT-RATE's
RadBERT classifier reaches. ``--quick``: the first 200 reports, no learning curve, no NegEx, no plot.
CT-RATE: Hamamci et al.; reports CC BY-NC-SA 4.0.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import _repo  # noqa: F401  (the repository root first on sys.path: tests.support, stages)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data" / "reports"
CTRATE = SHARED / "ctrate_manual_labels" / "train.csv"
CTRATE_MAP = SHARED / "ctrate_manual_labels" / "map_train_classifier.csv"
NEGEX = SHARED / "negex_context" / "rsAnnotations-1-120-random.txt"
PLOT = REPO / "docs" / "label_learning_curve.png"
RADBERT_MACRO_F1 = 0.98  # CT-RATE's transformer classifier on held-out manually labelled reports
TRAIN_SIZES = (50, 100, 200, 400)
DRAWS = 3


def patient_keys(ids: list[str]) -> list[str | None]:
    """CT-RATE patient of each report (``train_17051_a`` -> ``train_17051``), None where not in CT-RATE."""
    if not CTRATE_MAP.is_file():
        return [None] * len(ids)
    with open(CTRATE_MAP, encoding="utf-8", newline="") as f:
        names = {row["AccessionNo"]: row["NameinCTRATE"] for row in csv.DictReader(f)}
    out: list[str | None] = []
    for rid in ids:
        name = names.get(rid, "")
        out.append("_".join(name.split("_")[:2]) if name.startswith(("train_", "valid_")) else None)
    return out


def plot_curve(path: Path, curve: dict[int, list[float]], rules: float, full: tuple[int, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exact_ct.io import atomic_path

    sizes = sorted(curve)
    means = [statistics.mean(curve[n]) for n in sizes]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for n in sizes:
        ax.scatter([n] * len(curve[n]), curve[n], s=8, color="tab:blue", alpha=0.35)
    ax.plot([*sizes, full[0]], [*means, full[1]], "o-", color="tab:blue", label="rules + learned layer")
    ax.axhline(rules, color="tab:gray", linestyle="--", label=f"rules alone ({rules:.3f})")
    ax.set_xticks([*sizes, full[0]], [*(str(n) for n in sizes), f"{full[0]}\n(all)"])
    low = min(min(min(v) for v in curve.values()), rules, full[1])
    ax.set_ylim(min(low, 0.95) - 0.005, max(max(max(v) for v in curve.values()), rules, full[1]) + 0.005)
    ax.set_xlabel("manually labelled training reports")
    ax.set_ylabel("macro F1 (5-fold grouped CV)")
    ax.set_title("Learned layer: CT-RATE manual labels, 800 reports")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, metadata={"Software": None})
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="first 200 reports, no curve, no NegEx")
    parser.add_argument("--no-curve", action="store_true", help="skip the learning curve (and the plot)")
    parser.add_argument("--plot", default=str(PLOT), help="learning-curve PNG ('' = none)")
    parser.add_argument(
        "--ngrams", type=int, default=0, help="layer n-gram features (as fit-labeller --ngrams)"
    )
    parser.add_argument("--rule-scale", type=float, default=3.0, help="as fit-labeller --rule-scale")
    args = parser.parse_args()

    from exact_ct.reports import ReportLabeller
    from exact_ct.reports.learned import (
        LayerConfig,
        cross_validated_predictions,
        grouped_folds,
        report_groups,
    )
    from exact_ct.schema import ABNORMALITIES, PRESENT, UNCERTAIN
    from tests.support.label_scoring import f1_scores, load_ctrate_manual, negation_f1

    data = load_ctrate_manual(CTRATE)
    n = 200 if args.quick else len(data.ids)
    texts, truth = data.texts[:n], data.truth[:n]
    labeller = ReportLabeller()
    t0 = time.perf_counter()
    results = labeller.label_many(texts)
    took = time.perf_counter() - t0
    pred = [[int(v in (PRESENT, UNCERTAIN)) for v in r.labels] for r in results]
    halves = {"all": range(n), "even (development)": range(0, n, 2), "odd (held out)": range(1, n, 2)}
    scores = {h: f1_scores([truth[i] for i in idx], [pred[i] for i in idx]) for h, idx in halves.items()}
    print("Rules alone", file=sys.stderr)
    print(f"{'abnormality':36s} " + " ".join(f"{h:>20s}" for h in halves), file=sys.stderr)
    for name in (*ABNORMALITIES, "macro"):
        print(f"{name:36s} " + " ".join(f"{scores[h][name]:20.3f}" for h in halves), file=sys.stderr)
    print(f"labelled {n} reports in {took:.1f} s (one process)", file=sys.stderr)

    groups = report_groups(texts, patient_keys(data.ids[:n]))
    folds = grouped_folds(groups, 5)
    config = LayerConfig(ngrams=args.ngrams, rule_scale=args.rule_scale)
    t0 = time.perf_counter()
    layered = cross_validated_predictions(results, truth, folds, config)
    fit_s = time.perf_counter() - t0
    cv = f1_scores(truth, layered)
    print(
        f"\nRules + learned layer, 5-fold cross-validation grouped by report ({len(set(groups))} groups "
        f"for {n} reports), pooled out-of-fold predictions; 5 fits in {fit_s:.1f} s",
        file=sys.stderr,
    )
    print(f"{'abnormality':36s} {'rules':>8s} {'+ layer':>8s} {'change':>8s}", file=sys.stderr)
    for name in (*ABNORMALITIES, "macro"):
        a, b = scores["all"][name], cv[name]
        print(f"{name:36s} {a:8.3f} {b:8.3f} {b - a:+8.3f}", file=sys.stderr)
    per_fold = []
    for _, test in folds:
        r = f1_scores([truth[i] for i in test], [pred[i] for i in test])["macro"]
        c = f1_scores([truth[i] for i in test], [layered[i] for i in test])["macro"]
        per_fold.append((r, c))
    print(
        "macro F1 per fold (rules -> + layer): "
        + ", ".join(f"{r:.3f} -> {c:.3f}" for r, c in per_fold)
        + f"; layer better in {sum(c > r for r, c in per_fold)} of {len(per_fold)} folds",
        file=sys.stderr,
    )
    low = {a: round(cv[a], 3) for a in ABNORMALITIES if cv[a] < 0.93}
    print(f"labels below 0.93 with the layer: {low or 'none'}", file=sys.stderr)

    if not args.quick and not args.no_curve:
        curve: dict[int, list[float]] = {}
        for size in TRAIN_SIZES:
            curve[size] = [
                f1_scores(truth, cross_validated_predictions(results, truth, folds, config, size, seed))[
                    "macro"
                ]
                for seed in range(DRAWS)
            ]
            vals = curve[size]
            print(
                f"learning curve: {size:4d} training reports: macro F1 {statistics.mean(vals):.3f} "
                f"(draws {', '.join(f'{v:.3f}' for v in vals)})",
                file=sys.stderr,
            )
        full_n = min(len(tr) for tr, _ in folds)
        print(
            f"learning curve: all ~{full_n} training reports per fold: macro F1 {cv['macro']:.3f}",
            file=sys.stderr,
        )
        if args.plot:
            plot_curve(Path(args.plot), curve, scores["all"]["macro"], (full_n, cv["macro"]))
            print(f"plot -> {args.plot}", file=sys.stderr)
    if not args.quick:
        neg = negation_f1(labeller, NEGEX)
        print(
            f"NegEx ({neg.n} sentences, {neg.skipped} skipped): negated F1 {neg.f1_negated:.3f}, "
            f"affirmed F1 {neg.f1_affirmed:.3f}, accuracy {neg.accuracy:.3f}",
            file=sys.stderr,
        )
    macro = scores["all"]["macro"]
    print(
        f"label_accuracy_macro_f1: {macro:.3f} F1 rules alone, {cv['macro']:.3f} rules + learned layer "
        f"(5-fold grouped CV) (ratio {macro / RADBERT_MACRO_F1:.2f} vs CT-RATE RadBERT classifier macro F1 "
        f"{RADBERT_MACRO_F1} on {n} CT-RATE manually labelled reports)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
