"""Binary label policy: report labels (1/0/-1/empty) -> binary targets plus an uncertain flag."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from exact_ct.schema import ABNORMALITIES, ABSENT, PRESENT, UNCERTAIN

UNCERTAIN_PREFIX = "uncertain:"
TRUTH_PREFIX = "truth:"


@dataclass(frozen=True)
class LabelPolicy:
    """How report labels become binary training targets (documented in docs/model.md).

    Attributes:
        not_mentioned: binary value of an empty cell (the finding is not mentioned); CT-RATE uses 0.
        uncertain: binary value stored for a hedged (-1) finding. The study also gets an uncertain
            flag, so the loss can mask or soften it whatever this value is (train.loss.uncertain).
    """

    not_mentioned: int = 0
    uncertain: int = 1

    def __post_init__(self) -> None:
        for name in ("not_mentioned", "uncertain"):
            if getattr(self, name) not in (0, 1):
                raise ValueError(f"build_dataset.labels.{name} must be 0 or 1, got {getattr(self, name)!r}")


def binarise(raw: pd.DataFrame, policy: LabelPolicy) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Binary labels and uncertain flags for a frame with the 18 abnormality columns (1/0/-1/empty).

    Returns:
        (binary labels 0/1, uncertain flags 0/1, problems): ``problems`` lists cells with values other
        than 1/0/-1/empty as "row i, column c: value v"; those cells are treated as not mentioned.
    """
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
