"""Report understanding: rule-based (medspacy) labels for the 18 abnormalities, with evidence spans."""

from __future__ import annotations

from exact_ct.reports.labeller import PRECEDENCE, Mention, ReportLabeller, ReportLabels, combine
from exact_ct.reports.policy import BinaryPolicy, to_binary
from exact_ct.reports.rules import DEFAULT_RULES_DIR, RuleError, RuleSet, load_rules

__all__ = [
    "DEFAULT_RULES_DIR",
    "PRECEDENCE",
    "BinaryPolicy",
    "Mention",
    "ReportLabeller",
    "ReportLabels",
    "RuleError",
    "RuleSet",
    "combine",
    "load_rules",
    "to_binary",
]
