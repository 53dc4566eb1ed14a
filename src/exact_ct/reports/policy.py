"""The binary view of the 1/0/-1/empty labels, for training and for comparison with CT-RATE."""

from __future__ import annotations

from dataclasses import dataclass

from exact_ct.schema import ABSENT, PRESENT, UNCERTAIN


@dataclass(frozen=True)
class BinaryPolicy:
    """What an uncertain or unmentioned finding becomes; ``None`` keeps the cell empty (masked).

    Present is always 1 and absent always 0. Defaults follow CT-RATE: a report that does not mention a
    finding is read as negative, and a hedged finding as positive. The one place it is set for the
    pipeline is ``params.yaml: build_dataset.binary_policy`` (training targets); ``exact label-reports
    --binary`` takes it from ``--not-mentioned`` and ``--uncertain``. Training needs 0 or 1 for both:
    hedged findings are also flagged, so the loss can mask them (``train.loss.uncertain``).
    """

    not_mentioned: int | None = 0
    uncertain: int | None = 1

    def __post_init__(self) -> None:
        for name in ("not_mentioned", "uncertain"):
            v = getattr(self, name)
            if v not in (0, 1, None):
                raise ValueError(f"binary_policy.{name} must be 0, 1 or null (masked), not {v!r}")


def to_binary(value: int | None, policy: BinaryPolicy) -> int | None:
    """Map one label (1/0/-1/None) to 0/1 (or None = masked) under ``policy``."""
    if value is None:
        return policy.not_mentioned
    if value == PRESENT:
        return 1
    if value == ABSENT:
        return 0
    if value == UNCERTAIN:
        return policy.uncertain
    raise ValueError(f"not a label value: {value!r}")
