"""Score the labeller: CT-RATE manual labels (per-label and macro F1) and NegEx negation F1."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from exact_ct.reports.labeller import ReportLabeller
from exact_ct.reports.pipeline import SPAN_GROUP
from exact_ct.reports.policy import BinaryPolicy, to_binary
from exact_ct.schema import ABNORMALITIES


@dataclass(frozen=True)
class LabelledReports:
    ids: list[str]
    texts: list[str]
    truth: list[list[int]]  # rows x 18, 0/1


def load_ctrate_manual(path: str | Path) -> LabelledReports:
    """The CT-RATE manually labelled reports (AccessionNo, report_text, 18 label columns of 0/1)."""
    ids, texts, truth = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            ids.append(row["AccessionNo"])
            texts.append(row["report_text"])
            truth.append([int(float(row[a])) for a in ABNORMALITIES])
    return LabelledReports(ids, texts, truth)


def f1_scores(truth: Sequence[Sequence[int]], pred: Sequence[Sequence[int]]) -> dict[str, float]:
    """Per-abnormality F1 (positive class) plus ``macro``; sklearn's definition, zero_division=0."""
    from sklearn.metrics import f1_score

    out = {}
    for j, name in enumerate(ABNORMALITIES):
        out[name] = float(f1_score([t[j] for t in truth], [p[j] for p in pred], zero_division=0))
    out["macro"] = sum(out[a] for a in ABNORMALITIES) / len(ABNORMALITIES)
    return out


def binary_predictions(
    labeller: ReportLabeller, texts: Sequence[str], policy: BinaryPolicy | None = None
) -> list[list[int]]:
    policy = policy or BinaryPolicy()
    return [[int(to_binary(v, policy) or 0) for v in r.labels] for r in labeller.label_many(texts)]


@dataclass(frozen=True)
class NegationScore:
    f1_negated: float
    f1_affirmed: float
    accuracy: float
    n: int
    skipped: int


def negex_sentences(path: str | Path) -> list[tuple[str, str, str]]:
    """(concept, sentence, 'Negated'|'Affirmed') from the NegEx annotation file (tab-separated)."""
    rows = []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        ci = 1
        si = 2
        ni = (
            3
            if "negation" in header[3].lower()
            else next(i for i, h in enumerate(header) if "negation" in h.lower())
        )
        for r in reader:
            if len(r) > ni and r[ni].strip() in ("Negated", "Affirmed"):
                rows.append((r[ci].strip(), r[si].strip().strip('"'), r[ni].strip()))
    return rows


def negation_f1(labeller: ReportLabeller, path: str | Path) -> NegationScore:
    """Negated-vs-affirmed F1 of our ConText rules on annotated sentences.

    The annotated concept is placed as the target span (our target rules are for chest CT findings,
    not the clinical-note concepts of NegEx), then the sentence goes through our sentence splitter,
    sectionizer and ConText.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from spacy.tokens import Span

    nlp = labeller.nlp
    pre = [name for name in nlp.pipe_names if name not in ("medspacy_target_matcher", "medspacy_context")]
    context = nlp.get_pipe("medspacy_context")
    truth, pred, skipped = [], [], 0
    for concept, sentence, label in negex_sentences(path):
        words = concept.split()
        m = re.search(r"\s+".join(re.escape(w) for w in words), sentence, re.IGNORECASE) if words else None
        if m is None:
            skipped += 1
            continue
        with nlp.select_pipes(enable=pre):
            doc = nlp(sentence)
        span = doc.char_span(m.start(), m.end(), label="CONCEPT", alignment_mode="expand")
        if span is None:
            skipped += 1
            continue
        doc.spans[SPAN_GROUP] = [Span(doc, span.start, span.end, label="CONCEPT")]
        doc = context(doc)
        target = doc.spans[SPAN_GROUP][0]
        truth.append(int(label == "Negated"))
        pred.append(int(bool(target._.is_negated)))
    return NegationScore(
        f1_negated=float(f1_score(truth, pred, pos_label=1)),
        f1_affirmed=float(f1_score(truth, pred, pos_label=0)),
        accuracy=float(accuracy_score(truth, pred)),
        n=len(truth),
        skipped=skipped,
    )
