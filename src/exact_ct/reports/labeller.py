"""Label one radiology report: mentions of the 18 abnormalities with ConText attributes, then precedence."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exact_ct.reports.evidence import laterality, lobes, sizes_mm
from exact_ct.reports.fastcontext import FastConText
from exact_ct.reports.fastmatch import doc_cache, necessary_factors, sentence_starts, use_fast_path
from exact_ct.reports.pipeline import SPAN_GROUP, build_nlp
from exact_ct.reports.rules import EXCLUDE, RuleSet, TargetMeta, load_rules
from exact_ct.schema import ABNORMALITIES, ABSENT, PRESENT, UNCERTAIN

#: Sections whose mentions describe the request or the technique, not this study's findings.
DEFAULT_IGNORED_SECTIONS = ("clinical_information", "technique", "comparison")

#: Rank of a mention value when several mentions of one abnormality disagree (CheXpert-style):
#: present > uncertain > absent. A report that says "no effusion on the left, small effusion on the
#: right" has an effusion; "possible nodule ... no nodule" stays uncertain.
PRECEDENCE = {PRESENT: 3, UNCERTAIN: 2, ABSENT: 1}

Label = int | None


@dataclass(frozen=True)
class Mention:
    """One matched mention; ``value`` is None when it is ignored (``note`` says why)."""

    abnormality: str
    value: Label
    start_char: int
    end_char: int
    sentence: str
    section: str
    laterality: str
    lobe: str
    size_mm: float | None
    text: str
    modifiers: str
    note: str = ""


@dataclass(frozen=True)
class ReportLabels:
    labels: tuple[Label, ...]
    mentions: tuple[Mention, ...]


def combine(values: Iterable[Label]) -> Label:
    """Combine mention values of one abnormality by :data:`PRECEDENCE`; None when none counts."""
    best: Label = None
    for v in values:
        if v is not None and (best is None or PRECEDENCE[v] > PRECEDENCE[best]):
            best = v
    return best


def _sentences(doc: Any) -> tuple[list[int], list[tuple[int, int, str]]]:
    """Sentence start tokens and (start token, start char, text) from the SENT_START array in one pass."""
    cached = doc_cache(doc)
    text, tokens = cached.text, cached.tokens
    starts = sentence_starts(doc)
    char_starts = [tokens.starts[i] for i in starts]
    char_ends = [*char_starts[1:], len(text)]
    return starts, [(t, c, text[c:e]) for t, c, e in zip(starts, char_starts, char_ends, strict=True)]


def _sentence_factors(metas: Iterable[TargetMeta]) -> dict[re.Pattern[str], frozenset[str]]:
    """Lower-case literals of which every match of a sentence filter contains one (ASCII ones only).

    A sentence that holds none of them cannot match, which a substring test tells far faster than the
    case-insensitive regex. Filters without such literals are left out (always searched); so are those
    with a non-ASCII literal, which ``re.IGNORECASE`` may match to an ASCII letter (K, the Kelvin sign).
    """
    out: dict[re.Pattern[str], frozenset[str]] = {}
    for meta in metas:
        patterns = [meta.require_sentence, meta.exclude_sentence, meta.unless_sentence]
        for pattern in [*patterns, *(p for p, _ in meta.routes)]:
            if pattern is None or pattern in out:
                continue
            factors = necessary_factors(pattern.pattern)
            if factors and all(f.isascii() for f in factors):
                out[pattern] = frozenset(f.lower() for f in factors)
    return out


_NON_SPACE = re.compile(r"\S")


def section_table(doc: Any, ignored: Iterable[str], sent_starts: Sequence[int]) -> list[tuple[int, str]]:
    """(first token, category) of each section, in order; text after a bounded ignored section is ``""``.

    A section runs to the next header. The last one has no next header, and a comparison or clinical
    history header that opens a report without a findings header ("Comparison: CT dated 2019. Trachea
    and main bronchi are open. ...") would then swallow every finding. So the last section, when it is
    an ignored one, ends at the first line break after its text (a header on its own line: at the end
    of its first line of text), or, in a report without line breaks, at the end of its first sentence.
    A section followed by another header keeps its whole text (a wrapped clinical history line stays
    history).
    """
    ignored = frozenset(ignored)
    secs = list(doc._.sections or ())
    out = [(sec.section_span[0], sec.category or "") for sec in secs]
    if not secs or (secs[-1].category or "") not in ignored:
        return out
    last = secs[-1]
    body, end = last.body_span[0], last.section_span[1]
    if body >= end:
        return out
    cached = doc_cache(doc)
    text, starts = cached.text, cached.tokens.starts
    first = _NON_SPACE.search(text, starts[body])  # the first character of the section's text
    if first is None:
        return out
    line_end = text.find("\n", first.start())
    if line_end != -1:
        cut = bisect.bisect_left(starts, line_end)
    else:
        k = bisect.bisect_right(sent_starts, bisect.bisect_left(starts, first.start()))
        cut = sent_starts[k] if k < len(sent_starts) else end
    if cut < end:
        out.append((cut, ""))
    return out


class ReportLabeller:
    """Rule-based labeller (medspacy). Build once per process; ``label``/``label_many`` are then pure."""

    def __init__(
        self,
        rules: RuleSet | str | Path | None = None,
        ignore_sections: Sequence[str] = DEFAULT_IGNORED_SECTIONS,
        fast: bool = True,
    ) -> None:
        """``fast=False`` turns off every shortcut (medspacy's own matchers, no substring prefilters):
        the same labels, slower; the tests compare the two. ``fast=True`` falls back to ``fast=False``,
        with a warning, where the installed medspacy is not the one the fast path reads (``self.fast``)."""
        fast = use_fast_path(fast)
        self.fast = fast
        self.rules = rules if isinstance(rules, RuleSet) else load_rules(rules)
        self.nlp, self._metas = build_nlp(self.rules, fast=fast)
        self.ignore_sections = frozenset(ignore_sections)
        self._index = {name: i for i, name in enumerate(ABNORMALITIES)}
        self._factors = _sentence_factors(self._metas.values()) if fast else {}
        # ConText's graph step without medspacy's per-token sentence walks (fastcontext.py: same result)
        self._procs = [
            FastConText(proc) if fast and name == "medspacy_context" else proc
            for name, proc in self.nlp.pipeline
        ]

    def doc(self, text: str) -> Any:
        """The processed spaCy doc of one report: sentences, sections, target spans and ConText modifiers."""
        # The components run one by one on each doc: spaCy's batching buys nothing for rule components,
        # and keeping the raw text on the doc spares a Doc.text re-join in every component.
        doc = self.nlp.make_doc(text)
        doc.user_data["exact_raw"] = text  # spaCy's tokenizer is non-destructive: doc.text == text
        for proc in self._procs:
            doc = proc(doc)
        return doc

    def label(self, text: str) -> ReportLabels:
        return self._from_doc(self.doc(text))

    def label_many(self, texts: Iterable[str]) -> list[ReportLabels]:
        """Label reports in order."""
        return [self._from_doc(self.doc(text)) for text in texts]

    def _from_doc(self, doc: Any) -> ReportLabels:
        spans = doc.spans[SPAN_GROUP] if SPAN_GROUP in doc.spans else ()
        mentions: list[Mention] = []
        if spans:
            # Per-doc tables instead of per-mention lookups (Span.sent walks tokens; extensions are slow).
            sent_starts, sents = _sentences(doc)
            sections = section_table(doc, self.ignore_sections, sent_starts)
            section_starts = [s[0] for s in sections]
            cache: dict[Any, Any] = {}
            for span in spans:
                mentions.extend(self._mentions(span, sents, sent_starts, sections, section_starts, cache))
        values: list[list[Label]] = [[] for _ in ABNORMALITIES]
        for m in mentions:
            values[self._index[m.abnormality]].append(m.value)
        return ReportLabels(tuple(combine(v) for v in values), tuple(mentions))

    def _mentions(
        self,
        span: Any,
        sents: list[tuple[int, int, str]],
        sent_starts: list[int],
        sections: list[tuple[int, str]],
        section_starts: list[int],
        cache: dict[Any, Any],
    ) -> list[Mention]:
        ext = span._
        rule = ext.target_rule
        if rule.category == EXCLUDE:
            return []
        meta = self._metas[rule._rule_id]
        k = bisect.bisect_right(sent_starts, span.start) - 1
        _, sent_char, sentence = sents[k]

        def hit(pattern: re.Pattern[str]) -> bool:
            # Several mentions often share a sentence and a rule's sentence filters: test each pair once.
            key = (k, pattern)
            found = cache.get(key)
            if found is None:
                factors = self._factors.get(pattern)
                if factors is not None and sentence.isascii():
                    low = cache.get((k, None))
                    if low is None:
                        low = cache[(k, None)] = sentence.lower()
                    if not any(f in low for f in factors):
                        cache[key] = False
                        return False
                found = cache[key] = pattern.search(sentence) is not None
            return bool(found)

        if meta.require_sentence is not None and not hit(meta.require_sentence):
            return []
        if meta.exclude_sentence is not None and hit(meta.exclude_sentence):
            if meta.unless_sentence is None or not hit(meta.unless_sentence):
                return []
        if meta.routed:
            names = [name for pattern, name in meta.routes if hit(pattern)]
            if not names and meta.default:
                names = [meta.default]
        else:
            names = [rule.category]
        if not names:
            return []

        modifiers = ext.modifiers
        categories = {m.category for m in modifiers}
        value, note = self._value(categories, meta.value)
        attrs = cache.get(k)
        if attrs is None:
            side = laterality(sentence)
            attrs = cache[k] = (side, lobes(sentence, side), sizes_mm(sentence))
        side, lobe, sizes = attrs
        start_char, end_char = span.start_char, span.end_char
        text = doc_cache(span.doc).text[start_char:end_char]  # == span.text: the tokenizer is non-destructive
        offset = start_char - sent_char
        size = min(sizes, key=lambda s: abs(s[0] - offset))[1] if sizes else None
        if value == PRESENT and meta.min_size_mm is not None:
            if not any(s >= meta.min_size_mm for _, s in sizes):
                value, note = None, f"no stated size >= {meta.min_size_mm:g} mm"
        j = bisect.bisect_right(section_starts, span.start) - 1
        section = sections[j][1] if j >= 0 else ""
        if section in self.ignore_sections and value is not None:
            value, note = None, f"section {section}"
        return [
            Mention(
                abnormality=name,
                value=value,
                start_char=start_char,
                end_char=end_char,
                sentence=sentence,
                section=section,
                laterality=side,
                lobe=lobe,
                size_mm=size,
                text=text,
                modifiers=";".join(sorted(c.lower() for c in categories)),
                note=note,
            )
            for name in names
        ]

    @staticmethod
    def _value(categories: set[str], fixed: int | None) -> tuple[Label, str]:
        if fixed is not None:  # a statement of normality ("heart size is normal")
            return fixed, ""
        # Negation first: "no finding suggestive of X" carries both modifiers and denies X.
        if "NEGATED_EXISTENCE" in categories:
            return ABSENT, ""
        if "POSSIBLE_EXISTENCE" in categories:
            return UNCERTAIN, ""
        if "HISTORICAL" in categories:
            return None, "historical"
        if "HYPOTHETICAL" in categories:
            return None, "hypothetical"
        return PRESENT, ""
