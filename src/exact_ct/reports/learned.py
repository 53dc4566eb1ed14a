"""A learned layer on the rules: per-abnormality logistic regression over the rules' evidence.

The rule labeller (:mod:`exact_ct.reports.labeller`) reads what a report says; a hospital's annotators
add conventions of their own (which wording counts as a finding). This layer learns those conventions
from a few hundred manually labelled reports, from general features only: for each abnormality, the
rules' label, the value of each of its mentions (affirmed, negated, hedged, historical, hypothetical,
ignored section, below a size threshold), the target phrase with that value, the ConText modifiers, the
section, and word n-grams of the sentences that hold its mentions. One model per abnormality sees only
its own abnormality's features. It never labels an abnormality the rules found no mention of, so every
positive still has a sentence behind it in the evidence.

The fitted layer is a JSON file (``learned_layer.json`` in a rules folder): coefficients by feature
name, a schema version, and the digest of the rules it was fitted on; loading it with other rules is an
error. Prediction needs no scikit-learn: a sum of weights per abnormality.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from exact_ct.reports.labeller import Label, Mention, ReportLabels
from exact_ct.reports.table import Quarantined, ReportTable
from exact_ct.schema import ABNORMALITIES, ABSENT, PRESENT, UNCERTAIN

#: File name of the layer inside a rules folder.
LAYER_FILE = "learned_layer.json"
SCHEMA = "exact-ct/learned-labeller-layer"
#: Bumped whenever the features or the file layout change; older files are refused.
SCHEMA_VERSION = 1

_WORD = re.compile(r"[a-z]+")
_VALUE_NAMES = {PRESENT: "affirmed", ABSENT: "negated", UNCERTAIN: "hedged"}


@dataclass(frozen=True)
class LayerConfig:
    """How the layer is fitted (``exact fit-labeller`` options)."""

    c: float = 0.3  # inverse L2 regularisation strength of each logistic regression
    min_df: int = 3  # a feature must occur in at least this many training reports
    ngrams: int = 0  # word n-grams (1..ngrams) of the sentences holding an abnormality's mentions; 0 = none
    min_positives: int = 3  # fewer positive (or negative) training reports: the rules' label is kept
    threshold: float = 0.5
    #: value of the rules'-label indicator: above 1 its weight costs less regularisation, so with few
    #: training reports the layer stays close to the rules instead of falling back to the base rate
    rule_scale: float = 3.0


def _mention_value(m: Mention) -> str:
    """'affirmed' / 'negated' / 'hedged', or why the mention does not count (historical, section, ...)."""
    if m.value is not None:
        return _VALUE_NAMES[m.value]
    note = m.note.split(" ", 1)[0] if m.note else "ignored"
    return {"no": "small"}.get(note, note)  # "no stated size >= 10 mm" -> small


def _phrase(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _rule_value(v: Label) -> str:
    return "none" if v is None else _VALUE_NAMES[v]


def report_features(result: ReportLabels, ngrams: int = 0, rule_scale: float = 1.0) -> list[dict[str, float]]:
    """The features of one report, one dict per abnormality (in :data:`ABNORMALITIES` order).

    Binary indicators, plus the log count of each mention value. Only the rules' output is read (the
    mentions carry their sentences), so the layer needs nothing the evidence does not already hold.
    """
    out: list[dict[str, float]] = [{f"rule={_rule_value(v)}": rule_scale} for v in result.labels]
    index = {name: i for i, name in enumerate(ABNORMALITIES)}
    counts: list[Counter[str]] = [Counter() for _ in ABNORMALITIES]
    sentences: list[set[str]] = [set() for _ in ABNORMALITIES]
    for m in result.mentions:
        j = index[m.abnormality]
        f = out[j]
        value = _mention_value(m)
        counts[j][value] += 1
        f[f"phrase={_phrase(m.text)}|{value}"] = 1.0
        f[f"section={m.section or 'none'}|{value}"] = 1.0
        for modifier in m.modifiers.split(";"):
            if modifier:
                f[f"modifier={modifier}"] = 1.0
        if ngrams and m.value is not None:
            sentences[j].add(m.sentence)
    for j, f in enumerate(out):
        for value, n in counts[j].items():
            f[f"mentions={value}"] = math.log1p(n)
        for sentence in sorted(sentences[j]):
            words = _WORD.findall(sentence.lower())
            for n in range(1, ngrams + 1):
                for k in range(len(words) - n + 1):
                    f["ngram=" + " ".join(words[k : k + n])] = 1.0
    return out


@dataclass(frozen=True)
class LabelModel:
    """One abnormality's logistic regression; ``weights`` empty and ``fallback`` set: the rules decide."""

    intercept: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    fallback: str = ""

    def score(self, features: dict[str, float]) -> float:
        w = self.weights
        return self.intercept + sum(v * w[k] for k, v in features.items() if k in w)


def _note(m: Mention, label: int) -> Mention:
    extra = f"learned layer: {label}"
    return replace(m, note=f"{m.note}; {extra}" if m.note else extra)


@dataclass(frozen=True)
class LearnedLayer:
    """A fitted layer: :meth:`apply` turns the rules' labels of one report into the layer's."""

    models: tuple[LabelModel, ...]
    rules_digest: str
    config: LayerConfig = field(default_factory=LayerConfig)
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, result: ReportLabels) -> list[int]:
        """0/1 per abnormality (CT-RATE's binary reading: uncertain counts as positive)."""
        logit = math.log(self.config.threshold / (1 - self.config.threshold))
        feats = report_features(result, self.config.ngrams, self.config.rule_scale)
        mentioned = {m.abnormality for m in result.mentions}
        out = []
        for name, model, f, rule in zip(ABNORMALITIES, self.models, feats, result.labels, strict=True):
            if model.fallback or name not in mentioned:
                out.append(int(rule in (PRESENT, UNCERTAIN)))
            else:
                out.append(int(model.score(f) > logit))
        return out

    def apply(self, result: ReportLabels) -> ReportLabels:
        """The report's labels with the layer's decisions; mentions of a changed label get a note.

        A label the layer turns positive becomes present (1) and one it turns negative absent (0); a
        label it agrees with keeps the rules' value (so an uncertain finding stays -1). The mentions of
        an abnormality whose label changed say so in their ``note`` ("learned layer: 1").
        """
        binary = self.predict(result)
        labels: list[Label] = []
        changed: dict[str, int] = {}
        for name, rule, b in zip(ABNORMALITIES, result.labels, binary, strict=True):
            rule_b = int(rule in (PRESENT, UNCERTAIN))
            if b == rule_b:
                labels.append(rule)
            else:
                labels.append(PRESENT if b else ABSENT)
                changed[name] = b
        if not changed:
            return result
        mentions = tuple(
            _note(m, changed[m.abnormality]) if m.abnormality in changed else m for m in result.mentions
        )
        return ReportLabels(tuple(labels), mentions)

    def to_json(self) -> dict[str, Any]:
        labels: dict[str, Any] = {}
        for name, model in zip(ABNORMALITIES, self.models, strict=True):
            if model.fallback:
                labels[name] = {"fallback": model.fallback}
            else:
                labels[name] = {
                    "intercept": round(model.intercept, 8),
                    "weights": {k: round(v, 8) for k, v in sorted(model.weights.items())},
                }
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "rules_sha256": self.rules_digest,
            "config": {
                "c": self.config.c,
                "min_df": self.config.min_df,
                "ngrams": self.config.ngrams,
                "min_positives": self.config.min_positives,
                "threshold": self.config.threshold,
                "rule_scale": self.config.rule_scale,
            },
            "fit": self.info,
            "labels": labels,
        }

    def save(self, path: str | Path) -> None:
        """Write the layer as JSON, atomically (sorted keys: the same fit gives the same bytes)."""
        from exact_ct.io import write_json_atomic

        write_json_atomic(path, self.to_json())


def load_layer(path: str | Path, rules_digest: str | None = None) -> LearnedLayer:
    """Read a layer file; with ``rules_digest``, refuse a layer fitted on other rules.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a layer file, another schema version, an abnormality missing, or other rules;
            the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: learned layer not found (fit one with `exact fit-labeller`)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not a learned layer (invalid JSON: {e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{p}: not a learned layer (schema is not {SCHEMA!r})")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{p}: learned layer schema version {data.get('schema_version')!r}, this version reads "
            f"{SCHEMA_VERSION}: refit it with `exact fit-labeller`"
        )
    if rules_digest is not None and data.get("rules_sha256") != rules_digest:
        raise ValueError(
            f"{p}: learned layer was fitted on other rules (rules sha256 {str(data.get('rules_sha256'))[:12]}, "
            f"these rules {rules_digest[:12]}): refit it with `exact fit-labeller`"
        )
    labels = data.get("labels") or {}
    missing = [a for a in ABNORMALITIES if a not in labels]
    if missing:
        raise ValueError(f"{p}: learned layer lacks abnormalities {missing}")
    models = []
    for name in ABNORMALITIES:
        entry = labels[name]
        if entry.get("fallback"):
            models.append(LabelModel(fallback=str(entry["fallback"])))
        else:
            weights = {str(k): float(v) for k, v in entry["weights"].items()}
            models.append(LabelModel(float(entry["intercept"]), weights))
    cfg = data.get("config") or {}
    config = LayerConfig(
        **{
            k: cfg[k]
            for k in ("c", "min_df", "ngrams", "min_positives", "threshold", "rule_scale")
            if k in cfg
        }
    )
    return LearnedLayer(tuple(models), str(data.get("rules_sha256", "")), config, dict(data.get("fit") or {}))


def fit_layer(
    results: Sequence[ReportLabels],
    truth: Sequence[Sequence[int]],
    rules_digest: str,
    config: LayerConfig | None = None,
    info: dict[str, Any] | None = None,
) -> LearnedLayer:
    """Fit one logistic regression per abnormality on the rules' results of labelled reports.

    ``truth`` is 0/1 per report and abnormality (CT-RATE's binary reading). Deterministic (lbfgs, no
    random state); a few seconds for hundreds of reports.
    """
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    cfg = config or LayerConfig()
    if len(results) != len(truth):
        raise ValueError(f"{len(results)} rule results but {len(truth)} label rows")
    feats = [report_features(r, cfg.ngrams, cfg.rule_scale) for r in results]
    models = []
    for j, _name in enumerate(ABNORMALITIES):
        y = [int(t[j]) for t in truth]
        positives = sum(y)
        if min(positives, len(y) - positives) < cfg.min_positives:
            models.append(LabelModel(fallback=f"{positives} positive of {len(y)} training reports"))
            continue
        rows = [f[j] for f in feats]
        df = Counter(k for row in rows for k in row)
        keep = {k for k, c in df.items() if c >= cfg.min_df}
        vec = DictVectorizer(sort=True)
        x = vec.fit_transform([{k: v for k, v in row.items() if k in keep} for row in rows])
        clf = LogisticRegression(C=cfg.c, max_iter=5000).fit(x, y)
        names = vec.get_feature_names_out()
        weights = {str(k): float(w) for k, w in zip(names, clf.coef_[0], strict=True) if w != 0.0}
        models.append(LabelModel(float(clf.intercept_[0]), weights))
    fit_info = {
        "reports": len(results),
        "positives": {a: int(sum(t[j] for t in truth)) for j, a in enumerate(ABNORMALITIES)},
    }
    fit_info.update(info or {})
    return LearnedLayer(tuple(models), rules_digest, cfg, fit_info)


# --- training data and cross-validation -------------------------------------------------------------


@dataclass(frozen=True)
class ManualLabels:
    """Manually labelled reports: ids, composed texts, 0/1 per abnormality, and rows set aside."""

    ids: list[str]
    texts: list[str]
    truth: list[list[int]]
    quarantined: list[Quarantined]


def read_manual_labels(
    path: str | Path, id_column: str | None = None, text_columns: Sequence[str] | None = None
) -> ManualLabels:
    """Read a table of reports with one 0/1 column per abnormality (named as in CT-RATE).

    Ids and texts are read as by ``exact label-reports`` (delimiter sniffed, rows that cannot be labelled
    quarantined with their rule); a row whose label cell is not 0 or 1 is quarantined as
    ``invalid_label``. A missing abnormality column is an error that names it.
    """
    table = ReportTable(path, id_column, text_columns)
    lowered = {h.strip().lower(): i for i, h in enumerate(table.header)}
    missing = [a for a in ABNORMALITIES if a.lower() not in lowered]
    if missing:
        raise ValueError(f"{table.path}: label column(s) {missing} not found; columns are: {table.header}")
    cols = [lowered[a.lower()] for a in ABNORMALITIES]
    by_line: dict[int, list[str]] = {}
    with open(table.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=table.delimiter)
        next(reader)
        for cells_read in reader:
            if len(cells_read) == len(table.header):
                by_line[reader.line_num] = [cells_read[i].strip() for i in cols]
    ids, texts, truth = [], [], []
    quarantined: list[Quarantined] = []
    for row in table:
        cells = by_line[row.line]
        values = [_label_cell(c) for c in cells]
        bad = [a for a, v in zip(ABNORMALITIES, values, strict=True) if v is None]
        if bad:
            quarantined.append(
                Quarantined(str(table.path), row.line, row.report_id, "invalid_label", f"not 0 or 1: {bad}")
            )
            continue
        ids.append(row.report_id)
        texts.append(row.text)
        truth.append([int(v) for v in values if v is not None])
    return ManualLabels(ids, texts, truth, [*table.quarantined, *quarantined])


def _label_cell(cell: str) -> int | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return int(v) if v in (0.0, 1.0) else None


def report_groups(texts: Sequence[str], keys: Iterable[str | None] | None = None) -> list[int]:
    """A group number per report: reports with the same words (or the same non-empty key, e.g. a
    patient) share one, so a cross-validation split by group never has a report on both sides."""
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    key_list = list(keys) if keys is not None else [None] * len(texts)
    if len(key_list) != len(texts):
        raise ValueError(f"{len(key_list)} keys for {len(texts)} reports")
    for i, (text, key) in enumerate(zip(texts, key_list, strict=True)):
        for k in (f"text:{_phrase(text)}", f"key:{key}" if key else None):
            if k is None:
                continue
            if k in first:
                parent[find(i)] = find(first[k])
            else:
                first[k] = i
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(len(texts))]


def grouped_folds(groups: Sequence[int], folds: int = 5) -> list[tuple[list[int], list[int]]]:
    """(train, test) report indices of ``folds`` folds; no group is on both sides (sklearn GroupKFold)."""
    from sklearn.model_selection import GroupKFold

    idx = list(range(len(groups)))
    return [(list(tr), list(te)) for tr, te in GroupKFold(n_splits=folds).split(idx, groups=groups)]


def cross_validated_predictions(
    results: Sequence[ReportLabels],
    truth: Sequence[Sequence[int]],
    folds: Sequence[tuple[Sequence[int], Sequence[int]]],
    config: LayerConfig | None = None,
    train_size: int | None = None,
    seed: int = 0,
) -> list[list[int]]:
    """Each report's 0/1 labels from a layer fitted on the other folds (``train_size``: a seeded random
    subset of the training folds, for a learning curve)."""
    import numpy as np

    pred: list[list[int] | None] = [None] * len(results)
    for k, (train, test) in enumerate(folds):
        train = list(train)
        if train_size is not None and train_size < len(train):
            rng = np.random.default_rng([seed, k])
            train = sorted(rng.choice(train, size=train_size, replace=False).tolist())
        layer = fit_layer([results[i] for i in train], [truth[i] for i in train], "", config)
        for i in test:
            pred[i] = layer.predict(results[i])
    if any(p is None for p in pred):
        raise ValueError("the folds do not cover every report")
    return [p for p in pred if p is not None]
