"""Typed configuration of the publish stage (params.yaml `publish`)."""

from __future__ import annotations

from dataclasses import dataclass

from exact_ct.config import NonNegativeInt, Share


@dataclass(frozen=True)
class PublishConfig:
    """The whole `publish` section.

    Attributes:
        max_macro_drop: the candidate is rejected when its test macro AUROC is more than this below the
            champion's.
        max_label_drop: ... or when any abnormality's AUROC is more than this below the champion's.
        rescore_champion: score the champion on the candidate's test split (same studies, same labels)
            instead of trusting the metrics stored when it was published; a fair, paired comparison
            once new batches have changed the test split.
        first_version: version of the first registered model; empty takes the candidate package's version.
        min_macro_auroc: quality floor: a candidate whose test macro AUROC is below this (or undefined)
            is never promoted, not even as the first model (0.5 is chance level).
        min_test_studies: quality floor: a candidate evaluated on fewer test studies is never promoted
            (a macro AUROC over a handful of studies is noise).
    """

    max_macro_drop: float = 0.02
    max_label_drop: float = 0.05
    rescore_champion: bool = True
    first_version: str = ""
    min_macro_auroc: Share = 0.5
    min_test_studies: NonNegativeInt = 10

    def __post_init__(self) -> None:
        if self.max_macro_drop < 0 or self.max_label_drop < 0:
            raise ValueError("publish.max_macro_drop and publish.max_label_drop must be >= 0")
