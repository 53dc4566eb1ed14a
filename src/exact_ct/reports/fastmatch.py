"""Fast regex matching for medspacy rules: lower-case the text once, skip rules whose required words are absent.

medspacy 1.3.1's RegexMatcher rebuilds ``doc.text_with_ws`` for every pattern and runs every pattern over
every report. Here each pattern gets a set of literal "factors" (strings of which any match must contain
at least one, read from the parsed regex), so a rule whose factors do not occur in a report costs one
substring test instead of a regex scan, and a rule whose factors do occur only scans the clauses
around them. Matches are aligned to tokens exactly as medspacy does
(start snapped left, end snapped right).

This module and :mod:`exact_ct.reports.fastcontext` are the labeller's fast path, and the only code that
reads private APIs: Python's regex parser (``re._parser``) and medspacy's name-mangled matchers and
``RegexMatcher`` internals. :func:`use_fast_path` checks the medspacy version and the regex parser when
a labeller is built; on any other medspacy release it warns and the labeller runs plain medspacy (the
same labels, slower: ``tests/unit/test_reports_fastpath.py``).
"""

from __future__ import annotations

import bisect
import functools
import importlib.metadata
import operator
import re
import warnings
from collections.abc import Iterable
from typing import Any

try:  # private API: where Python 3.11-3.13 keep the regex parser
    import re._parser as sre_parse  # type: ignore[import-not-found]
    from re._constants import (  # type: ignore[import-not-found]
        ATOMIC_GROUP,
        BRANCH,
        IN,
        LITERAL,
        MAX_REPEAT,
        MIN_REPEAT,
        NOT_LITERAL,
        POSSESSIVE_REPEAT,
        SUBPATTERN,
    )
except ImportError:  # pragma: no cover - another Python: use_fast_path() turns the fast path off
    sre_parse = None

#: The medspacy release whose private layout the fast path reads (pinned in pyproject).
FAST_PATH_MEDSPACY = "1.3.1"
#: medspacy components -> the name-mangled attribute that holds their ``MedspacyMatcher`` (medspacy 1.3.1).
_MATCHER_ATTRIBUTES = {
    "medspacy_sectionizer": "_Sectionizer__matcher",
    "medspacy_target_matcher": "_TargetMatcher__matcher",
    "medspacy_context": "_ConText__matcher",
}


def medspacy_version() -> str:
    """The installed medspacy version (from the package metadata; medspacy itself is not imported)."""
    return importlib.metadata.version("medspacy")


def fast_path_problem() -> str | None:
    """Why the fast path cannot run here (another medspacy release, no ``re._parser``), or None."""
    if sre_parse is None:
        return "this Python has no re._parser"
    version = medspacy_version()
    if version != FAST_PATH_MEDSPACY:
        return (
            f"medspacy {version} is installed, the fast path reads medspacy {FAST_PATH_MEDSPACY}'s internals"
        )
    return None


def use_fast_path(requested: bool = True) -> bool:
    """Whether a labeller built now may use the fast path: ``requested`` and no :func:`fast_path_problem`.

    When the fast path was requested but cannot run, a ``RuntimeWarning`` says why: the labeller then runs
    plain medspacy, with the same labels, slower.
    """
    if not requested:
        return False
    problem = fast_path_problem()
    if problem is None:
        return True
    warnings.warn(
        f"report labeller: {problem}; running plain medspacy (same labels, about 6x slower). "
        f"Install medspacy=={FAST_PATH_MEDSPACY} for the fast path.",
        RuntimeWarning,
        stacklevel=2,
    )
    return False


_MIN_FACTOR = 3
#: Words in nearly every report: poor filters, chosen only when nothing rarer is required.
_COMMON = frozenset(
    "and the of in with is are was were not no or to on at by for as be that this both normal".split()
)
Factors = frozenset[str] | None  # None: no usable factor, always run the pattern


def _seq_factors(items: list[tuple[Any, Any]]) -> Factors:
    """Best necessary factor set of a sequence: literal runs and required sub-elements."""
    best: Factors = None
    run = ""

    def cost(f: frozenset[str]) -> tuple[int, int]:
        # Each factor costs one substring scan per report; short factors also match more often.
        return (
            sum(10 if x.strip() in _COMMON else 1 if len(x) >= 4 else 3 for x in f),
            -min(len(x) for x in f),
        )

    def consider(f: Factors) -> None:
        nonlocal best
        if f is not None and (best is None or cost(f) < cost(best)):
            best = f

    for op, arg in items:
        if op is LITERAL:
            run += chr(arg)
            continue
        if len(run) >= _MIN_FACTOR:
            consider(frozenset([run]))
        run = ""
        if op is SUBPATTERN:
            consider(_seq_factors(list(arg[-1])))
        elif op is ATOMIC_GROUP:
            consider(_seq_factors(list(arg)))
        elif op is BRANCH:
            alts = [_seq_factors(list(a)) for a in arg[1]]
            if all(a is not None for a in alts):
                consider(frozenset().union(*alts))  # type: ignore[arg-type]
        elif op in (MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT):
            lo, _hi, sub = arg
            if lo >= 1:
                consider(_seq_factors(list(sub)))
        elif op in (IN, NOT_LITERAL):
            pass
    if len(run) >= _MIN_FACTOR:
        consider(frozenset([run]))
    return best


def necessary_factors(pattern: str) -> Factors:
    """Literal strings of which every match of ``pattern`` (lower-case) contains at least one, or None."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error:
        return None
    return _seq_factors(list(parsed))


#: Clause breaks: a match never spans one (rules are clause-level), so each rule only scans the clauses
#: that contain one of its factors.
_BREAK = re.compile(r"[.;!?](?=\s)|\n")


_LETTERS = re.compile(r"[a-z]+")
#: Words whose anchor masks are remembered per process (a bounded vocabulary memo: memory stays flat).
_MEMO_MAX = 200_000


class _Anchors:
    """A cheap necessary condition for a factor: its longest run of letters occurs inside a word of the text.

    Each factor's anchor (its longest ``[a-z]+`` run) gets a bit. A text's mask ORs the anchors contained in
    each of its distinct words, remembered per word, so a report costs one ``findall`` and a few dictionary
    look-ups instead of one substring scan per factor (most factors are absent from most reports).
    """

    def __init__(self) -> None:
        self.bits: dict[str, int] = {}  # anchor -> bit
        self.factor_bit: dict[str, int] = {}  # factor -> bit of its anchor
        self.memo: dict[str, int] = {}  # word -> mask of the anchors it contains
        self.generation = 0

    def register(self, factors: Factors) -> int | None:
        """Mask of the anchors of ``factors``; None when some factor has no letter (it cannot be skipped)."""
        if factors is None:
            return None
        mask = 0
        for f in sorted(factors):
            runs = _LETTERS.findall(f)
            if not runs:
                return None
            anchor = max(runs, key=len)
            if anchor not in self.bits:
                self.bits[anchor] = len(self.bits)
                self.memo.clear()  # remembered masks lack the new anchor
                self.generation += 1
            self.factor_bit[f] = self.bits[anchor]
            mask |= 1 << self.bits[anchor]
        return mask

    def text_mask(self, low: str) -> int:
        memo = self.memo
        words = set(_LETTERS.findall(low))
        masks = list(map(memo.get, words))  # one C-level pass; the memo holds nearly every word
        if None in masks:
            masks = [self._word_mask(w) if m is None else m for w, m in zip(words, masks, strict=True)]
        return functools.reduce(operator.or_, masks, 0)

    def _word_mask(self, word: str) -> int:
        m = 0
        for anchor, bit in self.bits.items():
            if anchor in word:
                m |= 1 << bit
        if len(self.memo) < _MEMO_MAX:
            self.memo[word] = m
        return m


_ANCHORS = _Anchors()


def _windows(
    low: str,
    factors: Iterable[str] | None,
    breaks: list[int],
    cache: dict[str, list[int]],
    regions: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    """Merged (start, end) character ranges of the clauses that contain one of ``factors``.

    Factor positions are cached per document in ``cache`` (rules and matchers share factors); callers
    leave out the factors the anchor mask rules out. ``regions`` (sorted, disjoint) restricts the result.
    """
    if factors is None:
        return [(0, len(low))] if regions is None else regions
    found: list[tuple[int, int]] = []
    for f in factors:
        positions = cache.get(f)
        if positions is None:
            positions = []
            i = low.find(f)
            while i != -1:
                positions.append(i)
                i = low.find(f, i + 1)
            cache[f] = positions
        last_hi = -1
        for i in positions:
            if i < last_hi and found and found[-1][0] <= i:
                continue  # inside the clause just added
            # from just after the previous break to just after the next one
            k = bisect.bisect_left(breaks, i)
            lo = breaks[k - 1] + 1 if k > 0 else 0
            j = bisect.bisect_left(breaks, i + len(f))
            hi = breaks[j] + 1 if j < len(breaks) else len(low)
            found.append((lo, hi))
            last_hi = hi
    if regions is not None and found:
        found = _clip(found, regions)
    if len(found) <= 1:
        return found
    found.sort()
    merged = [found[0]]
    for lo, hi in found[1:]:
        if lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _clip(ranges: list[tuple[int, int]], regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Intersections of ``ranges`` with the sorted, disjoint ``regions``."""
    starts = [r[0] for r in regions]
    out = []
    for lo, hi in ranges:
        k = max(bisect.bisect_right(starts, lo) - 1, 0)
        while k < len(regions) and regions[k][0] < hi:
            a, b = max(lo, regions[k][0]), min(hi, regions[k][1])
            if a < b:
                out.append((a, b))
            k += 1
    return out


class TokenOffsets:
    """Character offsets of a doc's tokens, for char -> token alignment without creating Token objects.

    spaCy's tokenizer is non-destructive: the tokens (each with its trailing whitespace) tile the text,
    so the token that holds a character is found by bisecting the token start offsets, exactly like
    spaCy's own ``token_by_char``.
    """

    __slots__ = ("ends", "n_chars", "starts")

    def __init__(self, doc: Any, n_chars: int) -> None:
        arr = doc.to_array(["IDX", "LENGTH"]).reshape(-1, 2)
        self.starts: list[int] = arr[:, 0].tolist()
        self.ends: list[int] = (arr[:, 0] + arr[:, 1]).tolist()  # end of each token's text, no whitespace
        self.n_chars = n_chars

    def expand(self, start_char: int, end_char: int) -> tuple[int, int]:
        """(first token, end token) of ``Doc.char_span(start_char, end_char, alignment_mode="expand")``.

        An empty range where spaCy returns None (offsets outside the text).
        """
        if start_char < 0 or end_char - 1 < 0 or start_char >= self.n_chars or end_char - 1 >= self.n_chars:
            return 0, 0
        first = bisect.bisect_right(self.starts, start_char) - 1
        last = bisect.bisect_right(self.starts, end_char - 1) - 1
        if start_char == self.ends[first]:  # spaCy: a token's trailing whitespace does not start the span
            first += 1
        return first, last + 1


class DocText:
    """Per-doc data shared by the matchers and the labeller, computed once (see :func:`doc_cache`)."""

    __slots__ = ("_generation", "_mask", "breaks", "low", "positions", "text", "tokens")

    def __init__(self, doc: Any, text: str) -> None:
        self.text = text
        self.low = text.lower()
        self.breaks = [m.start() for m in _BREAK.finditer(self.low)]
        self.positions: dict[str, list[int]] = {}
        self.tokens = TokenOffsets(doc, len(text))
        self._mask = 0
        self._generation = -1

    @property
    def mask(self) -> int:
        """Anchor mask of the text (recomputed if rules were registered since)."""
        if self._generation != _ANCHORS.generation:
            self._mask = _ANCHORS.text_mask(self.low)
            self._generation = _ANCHORS.generation
            self.positions.clear()
        return self._mask


def doc_cache(doc: Any) -> DocText:
    """Text, lower-cased text, clause breaks, factor positions and token offsets of ``doc``, once per doc.

    ``Doc.text`` joins every token, so the matchers and the labeller share one copy per doc (the tokens
    never change after tokenisation: the components only set sentence starts and spans).
    """
    cached: DocText | None = doc.user_data.get("exact_text")
    if cached is None:
        raw = doc.user_data.get("exact_raw")
        cached = doc.user_data["exact_text"] = DocText(doc, raw if raw is not None else doc.text)
    return cached


def sentence_starts(doc: Any) -> list[int]:
    """Index of the first token of each sentence (from the SENT_START array, without Span objects)."""
    import numpy as np

    starts: list[int] = np.flatnonzero(doc.to_array("SENT_START") == 1).tolist()
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return starts


def target_regions(doc: Any, group: str) -> list[tuple[int, int]] | None:
    """Character ranges of the sentences that contain a span of ``doc.spans[group]`` (None: no group)."""
    if group not in doc.spans:
        return None
    spans = doc.spans[group]
    if not spans:
        return []
    starts = sentence_starts(doc)
    tokens = doc_cache(doc).tokens
    n_tok = len(doc)
    chosen = sorted({bisect.bisect_right(starts, s.start) - 1 for s in spans})
    out: list[tuple[int, int]] = []
    for k in chosen:
        lo = tokens.starts[starts[k]]
        end_tok = starts[k + 1] if k + 1 < len(starts) else n_tok
        # up to the next token's start (the last token's text and trailing whitespace), or the text's end
        hi = tokens.starts[end_tok] if end_tok < n_tok else tokens.n_chars
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def make_fast_matcher_class() -> type:
    from medspacy.common.regex_matcher import RegexMatcher

    class FastRegexMatcher(RegexMatcher):  # type: ignore[misc]
        _compiled: list[tuple[Any, Any, Any, Factors, int | None, list[tuple[str, int | None]]]] | None = None
        #: Span group of the targets: set for the ConText matcher, which then scans only their sentences.
        _targets_group: str | None = None

        def _prepare(self) -> list[tuple[Any, Any, Any, Factors, int | None, list[tuple[str, int | None]]]]:
            compiled = []
            for match_id, patterns in self._patterns.items():
                for pattern in patterns:
                    src = pattern.pattern
                    factors = necessary_factors(src)
                    rule_mask = _ANCHORS.register(factors)
                    # each factor with its anchor bit (None: no letters, always searched)
                    bits = [(f, _ANCHORS.factor_bit.get(f)) for f in sorted(factors or ())]
                    compiled.append(
                        (match_id, re.compile(src), self._callbacks[match_id], factors, rule_mask, bits)
                    )
            self._compiled = compiled
            return compiled

        def __call__(self, doc: Any) -> list[tuple[int, int, int]]:
            compiled = self._compiled or self._prepare()
            cached = doc_cache(doc)
            text, low, tokens = cached.text, cached.low, cached.tokens
            regions = None
            if self._targets_group is not None:
                regions = target_regions(doc, self._targets_group)
                if regions is not None and not regions:
                    return []  # no target in this report: ConText has nothing to modify
            if len(low) != len(text):  # a few Unicode letters change length when lower-cased
                return super().__call__(doc)  # type: ignore[no-any-return]
            subs = [low[lo:hi] for lo, hi in regions] if regions is not None else []
            matches: list[tuple[int, int, int]] = []
            mask = cached.mask
            for match_id, pattern, on_match, factors, rule_mask, bits in compiled:
                if regions is None:
                    if rule_mask is not None and not mask & rule_mask:
                        continue  # none of the rule's required words occurs in the report
                    # only the factors whose anchor occurs in a word of the report can occur in it
                    present = (
                        None if factors is None else [f for f, b in bits if b is None or (mask >> b) & 1]
                    )
                    windows = _windows(low, present, cached.breaks, cached.positions)
                elif factors is None:
                    windows = regions
                else:
                    if rule_mask is not None and not mask & rule_mask:
                        continue  # none of the rule's required words occurs in the report
                    # Target sentences are few and short: substring tests of the factors whose anchor
                    # occurs in the report pick the regions to scan whole (a match lies inside one region
                    # and contains a factor).
                    present = [f for f, b in bits if b is None or (mask >> b) & 1]
                    windows = [
                        r for r, sub in zip(regions, subs, strict=True) if any(f in sub for f in present)
                    ]
                    if not windows:
                        continue  # no word this rule requires occurs in a target sentence
                for lo, hi in windows:
                    for m in pattern.finditer(low, lo, hi):
                        start, end = m.start(), m.end()
                        while start < end and text[start].isspace():
                            start += 1
                        while end > start and text[end - 1].isspace():
                            end -= 1
                        first, stop = tokens.expand(start, end) if end > start else (0, 0)
                        if stop > first:
                            matches.append((match_id, first, stop))
                            if on_match is not None:
                                on_match(self, doc, len(matches) - 1, matches)
            return matches

    return FastRegexMatcher


def component_matcher(component: Any, name: str) -> Any:
    """The ``MedspacyMatcher`` of medspacy component ``name`` (a name-mangled attribute in medspacy 1.3.1)."""
    return getattr(component, _MATCHER_ATTRIBUTES[name])


def speed_up(component: Any, name: str, targets_group: str | None = None) -> None:
    """Swap the regex matcher behind medspacy component ``name`` for :func:`make_fast_matcher_class`'s.

    Call this after all rules are added, and only where :func:`use_fast_path` allows it.
    """
    medspacy_matcher = component_matcher(component, name)
    regex_matcher = medspacy_matcher._MedspacyMatcher__regex_matcher
    regex_matcher.__class__ = make_fast_matcher_class()
    regex_matcher._compiled = None
    regex_matcher._targets_group = targets_group
    regex_matcher._prepare()  # registers the rules' anchors before any report is matched
