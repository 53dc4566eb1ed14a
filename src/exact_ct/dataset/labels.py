"""Training targets: report labels (1/0/-1/empty) -> binary targets plus an uncertain flag."""

from __future__ import annotations

import numpy as np
import pandas as pd

from exact_ct.reports.policy import BinaryPolicy
from exact_ct.schema import ABNORMALITIES, ABSENT, PRESENT, UNCERTAIN

UNCERTAIN_PREFIX = "uncertain:"
TRUTH_PREFIX = "truth:"


def check_trainable(policy: BinaryPolicy, key: str = "build_dataset.binary_policy") -> None:
    """Raise ValueError, naming ``key``, when ``policy`` masks a value: every training target is 0 or 1."""
    for name in ("not_mentioned", "uncertain"):
        if getattr(policy, name) is None:
            hint = (
                "hedged findings are flagged for the loss anyway: set train.loss.uncertain: mask to mask them"
                if name == "uncertain"
                else "every study needs a 0/1 target for every abnormality"
            )
            raise ValueError(
                f"{key}.{name}: null (masked) is not supported for training ({hint}); use 0 or 1"
            )


def binarise(raw: pd.DataFrame, policy: BinaryPolicy) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Binary labels and uncertain flags for a frame with the 18 abnormality columns (1/0/-1/empty).

    ``policy`` must give 0 or 1 for both values (:func:`check_trainable`). Each hedged cell also gets an
    uncertain flag, so the loss can mask or soften it whatever ``policy.uncertain`` is.

    Returns:
        (binary labels 0/1, uncertain flags 0/1, problems): ``problems`` lists cells with values other
        than 1/0/-1/empty as "row i, column c: value v"; those cells are treated as not mentioned.
    """
    check_trainable(policy, "binary policy")
    problems: list[str] = []
    labels = pd.DataFrame(index=raw.index)
    uncertain = pd.DataFrame(index=raw.index)
    for name in ABNORMALITIES:
        if name not in raw.columns:
            raise KeyError(f"labels are missing the column {name!r}")
        col = pd.to_numeric(raw[name], errors="coerce")
        bad = (
            raw[name].notna()
            & (raw[name].astype(str).str.strip() != "")
            & ~col.isin([PRESENT, ABSENT, UNCERTAIN])
        )
        for i in np.flatnonzero(bad.to_numpy()):
            problems.append(f"row {i}, column {name!r}: value {raw[name].iloc[i]!r}")
        col = col.where(~bad)
        out = np.full(len(col), policy.not_mentioned, dtype=np.int8)
        out[(col == PRESENT).to_numpy()] = 1
        out[(col == ABSENT).to_numpy()] = 0
        unc = (col == UNCERTAIN).to_numpy()
        out[unc] = policy.uncertain
        labels[name] = out
        uncertain[UNCERTAIN_PREFIX + name] = unc.astype(np.int8)
    return labels, uncertain, problems
