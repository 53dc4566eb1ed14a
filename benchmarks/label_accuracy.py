"""Benchmark: report-label accuracy on the 800 manually labelled CT-RATE reports (+ NegEx negation F1).

Prints macro F1 of the binary labels (uncertain -> 1, not mentioned -> 0, CT-RATE's convention) against
CT-RATE's manual labels, as a ratio to the ~0.98 macro F1 that CT-RATE's RadBERT classifier reaches on
them. Per-label F1, the two halves (even rows: the half the rules were developed against; odd rows:
held out) and negated-vs-affirmed F1 on the NegEx annotated sentences go to stderr.
CT-RATE: Hamamci et al.; reports CC BY-NC-SA 4.0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data" / "reports"
CTRATE = SHARED / "ctrate_manual_labels" / "train.csv"
NEGEX = SHARED / "negex_context" / "rsAnnotations-1-120-random.txt"
RADBERT_MACRO_F1 = 0.98  # CT-RATE's transformer classifier on held-out manually labelled reports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="first 200 reports, no NegEx")
    args = parser.parse_args()

    from exact_ct.reports import ReportLabeller
    from exact_ct.reports.evaluate import binary_predictions, f1_scores, load_ctrate_manual, negation_f1
    from exact_ct.schema import ABNORMALITIES

    data = load_ctrate_manual(CTRATE)
    n = 200 if args.quick else len(data.ids)
    labeller = ReportLabeller()
    t0 = time.perf_counter()
    pred = binary_predictions(labeller, data.texts[:n])
    took = time.perf_counter() - t0
    truth = data.truth[:n]
    halves = {
        "all": range(n),
        "even (development)": range(0, n, 2),
        "odd (held out)": range(1, n, 2),
    }
    scores = {
        name: f1_scores([truth[i] for i in idx], [pred[i] for i in idx]) for name, idx in halves.items()
    }
    print(f"{'abnormality':36s} " + " ".join(f"{h:>20s}" for h in halves), file=sys.stderr)
    for name in (*ABNORMALITIES, "macro"):
        print(f"{name:36s} " + " ".join(f"{scores[h][name]:20.3f}" for h in halves), file=sys.stderr)
    print(f"labelled {n} reports in {took:.1f} s (one process)", file=sys.stderr)
    if not args.quick:
        neg = negation_f1(labeller, NEGEX)
        print(
            f"NegEx ({neg.n} sentences, {neg.skipped} skipped): negated F1 {neg.f1_negated:.3f}, "
            f"affirmed F1 {neg.f1_affirmed:.3f}, accuracy {neg.accuracy:.3f}",
            file=sys.stderr,
        )
    macro = scores["all"]["macro"]
    print(
        f"label_accuracy_macro_f1: {macro:.3f} F1 (ratio {macro / RADBERT_MACRO_F1:.2f} vs CT-RATE RadBERT "
        f"classifier macro F1 {RADBERT_MACRO_F1} on {n} CT-RATE manually labelled reports)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
