"""Build the medspacy pipeline for radiology reports (and medspacy's default one, for comparison)."""

from __future__ import annotations

from typing import Any

from exact_ct.reports.fastmatch import speed_up, use_fast_path
from exact_ct.reports.imports import import_spacy_light
from exact_ct.reports.rules import RuleSet, TargetMeta, compile_meta

#: spaCy's rule-based sentencizer is ~7x faster than PyRuSH (measured on CT-RATE reports); ';' and bullets end clauses too.
SENTENCE_PUNCT = [".", "!", "?", ";", "•", "。", '"']
SPAN_GROUP = "medspacy_spans"


def _register_line_breaks() -> None:
    import_spacy_light()
    from spacy.language import Language

    if "exact_line_breaks" in Language.factories:
        return

    @Language.component("exact_line_breaks")
    def line_breaks(doc: Any) -> Any:
        # A line break ends a sentence: list items and headers on their own line carry no full stop.
        # Vectorised: the token holding (or followed by) each newline is found from the token offsets.
        import numpy as np
        from spacy.attrs import IDX, SENT_START

        text = _doc_text(doc)
        newlines = [i for i, ch in enumerate(text) if ch == "\n"] if "\n" in text else []
        if not newlines or len(doc) < 2:
            return doc
        idx = doc.to_array([IDX]).ravel()
        # the token that contains the newline, or the one whose trailing whitespace holds it
        owner = np.searchsorted(idx, np.asarray(newlines), side="right") - 1
        nxt = np.unique(owner[owner >= 0] + 1)
        nxt = nxt[nxt < len(doc)]
        if len(nxt):
            # keep spaCy's dtype (uint64; -1 = "not a start" wraps): from_array reads the raw buffer
            starts = doc.to_array([SENT_START]).reshape(-1, 1)
            if (starts[nxt, 0] != 1).any():
                starts[nxt, 0] = 1
                doc.from_array([SENT_START], starts)
        return doc


def _register_sentencizer() -> None:
    from spacy.language import Language

    if "exact_sentencizer" in Language.factories:
        return

    @Language.factory("exact_sentencizer", default_config={"punct_chars": SENTENCE_PUNCT})
    def make_sentencizer(nlp: Any, name: str, punct_chars: list[str]) -> Any:
        return _Sentencizer(nlp, punct_chars)


class _Sentencizer:
    """spaCy's ``sentencizer`` rule, vectorised over the token arrays (it builds a Token per token).

    spaCy's rule: a sentence starts at the first token after a sentence-final character (one of
    ``punct_chars``) that is neither punctuation nor sentence-final itself; like spaCy's, it leaves
    sentence starts that are already set alone.
    """

    def __init__(self, nlp: Any, punct_chars: list[str]) -> None:
        import numpy as np

        self.punct = [np.uint64(nlp.vocab.strings.add(c)) for c in sorted(set(punct_chars))]

    def __call__(self, doc: Any) -> Any:
        import numpy as np
        from spacy.attrs import IS_PUNCT, ORTH, SENT_START

        n = len(doc)
        if n == 0:
            return doc
        arr = doc.to_array([ORTH, IS_PUNCT, SENT_START])
        orth = arr[:, 0]
        final = orth == self.punct[0]
        for code in self.punct[1:]:
            final |= orth == code
        plain = np.flatnonzero(~final & (arr[:, 1] == 0))
        after = np.searchsorted(plain, np.flatnonzero(final), side="right")  # first plain token after each
        guess = np.full(n, -1, dtype=np.int64)
        guess[0] = 1
        guess[plain[after[after < len(plain)]]] = 1
        current = arr[:, 2].astype(np.int64)  # uint64 in spaCy's buffer: -1 reads as 2**64 - 1
        current[current > 1] = -1
        starts = np.where(current != 0, current, guess).astype(np.uint64).reshape(-1, 1)
        doc.from_array([SENT_START], starts)
        return doc


def _doc_text(doc: Any) -> str:
    """The report text: the copy the labeller stored (``Doc.text`` re-joins every token), else ``doc.text``."""
    text = doc.user_data.get("exact_raw")
    return text if text is not None else doc.text


def _context_rule(cls: Any, raw: dict[str, Any]) -> Any:
    """``ConTextRule.from_dict`` plus ``terminated_by`` (a ConTextRule argument its ``from_dict`` rejects).

    ``terminated_by`` lists modifier categories that end this rule's scope, e.g. a clause break (comma)
    that ends "treated for pneumonia" before the next finding but leaves negation lists alone.
    """
    rule_dict = dict(raw)
    terminated_by = rule_dict.pop("terminated_by", None)
    rule = cls.from_dict(rule_dict)
    if terminated_by:
        rule.terminated_by = {str(c).upper() for c in terminated_by}
    return rule


def build_nlp(rules: RuleSet, fast: bool = True) -> tuple[Any, dict[str, TargetMeta]]:
    """Return (nlp, metadata by target rule id) for the fast radiology pipeline.

    Components: spaCy tokenizer and ``sentencizer``, a line-break splitter, medspacy's ``Sectionizer``
    (radiology sections, header sentences split off), ``TargetMatcher`` (into a span group, overlapping
    matches pruned to the longest) and ``ConText``. ``fast=False`` keeps medspacy's own regex matchers
    (every rule over the whole text): the reference the fast matchers are tested against; it is also
    what runs when the fast path cannot (:func:`exact_ct.reports.fastmatch.use_fast_path`).
    """
    fast = use_fast_path(fast)
    import_spacy_light()  # spares ~5 CPU-seconds of torch and nltk imports (imports.py)
    import spacy
    from medspacy.context import ConTextRule
    from medspacy.section_detection import SectionRule
    from medspacy.target_matcher import TargetRule

    _register_line_breaks()
    _register_sentencizer()
    nlp = spacy.blank("en")
    # spaCy's sentencizer creates a Token object per token; ours reads the token arrays (same rule)
    nlp.add_pipe("exact_sentencizer" if fast else "sentencizer", config={"punct_chars": SENTENCE_PUNCT})
    nlp.add_pipe("exact_line_breaks")
    sectionizer: Any = nlp.add_pipe(
        "medspacy_sectionizer",
        config={
            "rules": None,
            "span_attrs": None,
            "input_span_type": "group",
            "apply_sentence_boundary": True,
        },
    )
    sectionizer.add([SectionRule.from_dict(dict(r)) for r in rules.sections])
    matcher: Any = nlp.add_pipe(
        "medspacy_target_matcher", config={"result_type": "group", "span_group_name": SPAN_GROUP}
    )
    target_rules = [TargetRule.from_dict(dict(r)) for r in rules.targets]
    matcher.add(target_rules)
    context: Any = nlp.add_pipe(
        "medspacy_context", config={"rules": None, "input_span_type": "group", "span_group_name": SPAN_GROUP}
    )
    context.add([_context_rule(ConTextRule, r) for r in rules.context])
    if fast:
        speed_up(sectionizer, "medspacy_sectionizer")
        speed_up(matcher, "medspacy_target_matcher")
        speed_up(context, "medspacy_context", SPAN_GROUP)
    metas = {r._rule_id: compile_meta(r.metadata or {}) for r in target_rules}
    return nlp, metas


def build_default_nlp(rules: RuleSet) -> Any:
    """medspacy's default pipeline (``medspacy.load()``: PyRuSH, default ConText rules) with our target rules."""
    import_spacy_light()
    import medspacy
    from medspacy.target_matcher import TargetRule

    try:
        from loguru import logger

        logger.disable("PyRuSH")  # PyRuSH logs every sentence at DEBUG
    except ImportError:  # pragma: no cover
        pass
    nlp = medspacy.load()
    nlp.get_pipe("medspacy_target_matcher").add([TargetRule.from_dict(dict(r)) for r in rules.targets])
    return nlp
