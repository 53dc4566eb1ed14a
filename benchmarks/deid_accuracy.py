"""Benchmark: report de-identification. Recall on the identifier corpus, and what it does to clinical text.

1. The identifier corpus (tests/unit/deid_corpus.py: >= 100 sentences with phones, SSN, NHS numbers,
   record numbers, e-mails, dates, names after a title or relation word, addresses, postcodes):
   sentences that still hold a secret after (a) the date/long-number regexes alone (ingest before
   Presidio), (b) Presidio's built-in pattern recognizers alone, (c) the full free-text layer
   (Presidio + this project's recognizers + the regexes, what ingest runs).
2. The 800 manually labelled CT-RATE reports (anonymised, so every change is a false positive): share
   of reports changed, share of characters replaced, the replaced spans by token, and the labeller's
   macro F1 on the original vs the de-identified text (benchmarks/label_accuracy.py's scoring).

``--quick``: the first 200 reports. The last stdout line: ``deid_accuracy: ...``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import time
from collections import Counter
from pathlib import Path

import _repo  # noqa: F401  (the repository root first on sys.path: tests.support, stages)

REPO = Path(__file__).resolve().parents[1]
CTRATE = REPO / ".." / "shared" / "data" / "reports" / "ctrate_manual_labels" / "train.csv"
sys.path.insert(0, str(REPO / "tests" / "unit"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="first 200 CT-RATE reports")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every leak and every change")
    args = parser.parse_args()

    from deid_corpus import CLINICAL, FORMS, leaked

    from exact_ct.ingest.deid import (
        DATE_RE,
        DATE_TOKEN,
        ID_TOKEN,
        LONG_NUMBER_RE,
        Scrubber,
        build_analyzer,
        scrub_free_text,
    )
    from exact_ct.reports import ReportLabeller
    from exact_ct.schema import PRESENT, UNCERTAIN
    from tests.support.label_scoring import f1_scores, load_ctrate_manual

    builtin = build_analyzer(custom=False)
    full = Scrubber()
    methods = {
        "regexes only (before)": lambda t: LONG_NUMBER_RE.sub(ID_TOKEN, DATE_RE.sub(DATE_TOKEN, t)),
        "Presidio built-ins only": lambda t: scrub_free_text(t, builtin),
        "ingest (final)": full,
    }
    n_secrets = sum(len(s) for _, _, s in FORMS)
    print(
        f"identifier corpus: {len(FORMS)} sentences, {n_secrets} secrets; {len(CLINICAL)} clinical sentences"
    )
    corpus_leaks = {}
    for name, f in methods.items():
        bad = [(kind, f(text), leaked(f(text), secrets)) for kind, text, secrets in FORMS]
        bad = [b for b in bad if b[2]]
        kinds = Counter(k for k, _, _ in bad)
        changed = [c for c in CLINICAL if f(c) != c]
        corpus_leaks[name] = len(bad)
        print(
            f"  {name:26s} sentences leaking {len(bad):3d}/{len(FORMS)} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items())) or 'none'}); "
            f"clinical sentences changed {len(changed)}/{len(CLINICAL)}"
        )
        if args.verbose:
            for kind, out, secrets in bad:
                print(f"      leak [{kind}] {out!r}: {secrets}")

    data = load_ctrate_manual(CTRATE)
    n = 200 if args.quick else len(data.ids)
    texts, truth = data.texts[:n], data.truth[:n]
    t0 = time.perf_counter()
    cleaned = [full(t) for t in texts]
    took = time.perf_counter() - t0
    changed = [i for i in range(n) if cleaned[i] != texts[i]]
    replaced_chars = 0
    spans: Counter[str] = Counter()
    for i in changed:
        sm = difflib.SequenceMatcher(None, texts[i], cleaned[i], autojunk=False)
        for op, a0, a1, b0, b1 in sm.get_opcodes():
            if op != "equal":
                replaced_chars += a1 - a0
                spans[f"{texts[i][a0:a1]!r} -> {cleaned[i][b0:b1]!r}"] += 1
    total_chars = sum(len(t) for t in texts)
    print(
        f"CT-RATE reports (n={n}): {len(changed)} changed ({len(changed) / n:.1%}), "
        f"{replaced_chars} of {total_chars} characters replaced ({replaced_chars / total_chars:.4%}); "
        f"{took / n * 1000:.1f} ms per report"
    )
    tokens = Counter(
        tok for i in changed for tok in re.findall(r"\[[A-Z]+\]", cleaned[i]) if tok not in texts[i]
    )
    before = methods["regexes only (before)"]
    print(
        f"  tokens written: {dict(sorted(tokens.items()))}; the regexes alone (before) changed "
        f"{sum(before(t) != t for t in texts)} reports"
    )
    for span, count in spans.most_common(None if args.verbose else 15):
        print(f"  {count:4d} x {span}")

    labeller = ReportLabeller()

    def macro(batch: list[str]) -> float:
        pred = [[int(v in (PRESENT, UNCERTAIN)) for v in r.labels] for r in labeller.label_many(batch)]
        return f1_scores(truth, pred)["macro"]

    f1_before, f1_after = macro(texts), macro(cleaned)
    print(f"labeller macro F1: original {f1_before:.4f}, de-identified {f1_after:.4f}")
    print(
        f"deid_accuracy: corpus leaks {corpus_leaks['ingest (final)']}/{len(FORMS)} "
        f"(before {corpus_leaks['regexes only (before)']}/{len(FORMS)}, Presidio built-ins "
        f"{corpus_leaks['Presidio built-ins only']}/{len(FORMS)}); CT-RATE {len(changed)}/{n} reports changed; "
        f"macro F1 {f1_before:.4f} -> {f1_after:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
