"""medspacy's ConText step without its per-token sentence walks and per-pair method calls (same result).

``medspacy.context.ConText.__call__`` (medspacy 1.3.1, pinned) builds a ``ConTextModifier`` per trigger
match, whose scope comes from ``doc[start].sent`` (a token-by-token walk to both sentence ends), then
tests every (target, modifier) pair with ``ConTextModifier.modifies``. :class:`FastConText` runs the same
algorithm with medspacy's own classes and matcher, and changes two things only:

- the modifier scope is computed from the sentence-start array (the same boundaries ``Span.sent`` finds)
  and handed to ``ConTextModifier`` as ``scope_start``/``scope_end``, a documented constructor argument;
- ``modifies`` is called only for pairs whose token ranges pass its own scope test
  (``medspacy.util.tuple_overlaps(scope, target)``, evaluated inline on integers); every other pair
  returns False there, with no side effect.

A report with no trigger match costs one matcher call. Settings this class does not reproduce
(a ConText-wide ``max_scope`` window, ``prune_on_target_overlap``, targets from ``doc.ents`` or an
extension, user sentence hooks) send the doc to medspacy's own ``__call__``. Part of the labeller's fast
path: used only where :func:`exact_ct.reports.fastmatch.use_fast_path` allows it.
"""

from __future__ import annotations

import bisect
from typing import Any

from exact_ct.reports.fastmatch import component_matcher, sentence_starts


def modifier_scope(rule: Any, start: int, end: int, sent_start: int, sent_end: int) -> tuple[int, int]:
    """``ConTextModifier.__set_scope`` for a sentence-bounded scope (no ConText-wide ``max_scope``)."""
    direction = rule.direction.lower()
    max_scope = rule.max_scope
    if direction == "forward":
        lo, hi = end, sent_end
        if max_scope is not None and hi - lo > max_scope:
            hi = end + max_scope
    elif direction == "backward":
        lo, hi = sent_start, start
        if max_scope is not None and hi - lo > max_scope:
            lo = start - max_scope
    else:  # bidirectional (and TERMINATE / PSEUDO, which medspacy scopes the same way)
        lo, hi = sent_start, sent_end
        if max_scope is not None and start - lo > max_scope:
            lo = start - max_scope
        if max_scope is not None and hi - end > max_scope:
            hi = end + max_scope
    return lo, hi


class FastConText:
    """Wraps a ``medspacy_context`` component: call it like the component, get the same doc."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.matcher = component_matcher(context, "medspacy_context")

    def _supported(self, doc: Any) -> bool:
        ctx = self.context
        return (
            ctx.input_span_type == "group"
            and not ctx.max_scope
            and not ctx.prune_on_target_overlap
            and "sent" not in doc.user_token_hooks
            and "sent" not in doc.user_span_hooks
            and "sents" not in doc.user_hooks
        )

    def __call__(self, doc: Any) -> Any:
        from medspacy.context import ConTextGraph, ConTextModifier

        if not self._supported(doc):
            return self.context(doc)
        ctx = self.context
        targets = doc.spans[ctx.span_group_name]
        graph = ConTextGraph(prune_on_modifier_overlap=ctx.prune_on_target_overlap)
        graph.targets = targets
        graph.modifiers = []
        matches = self.matcher(doc)
        if matches:
            starts = sentence_starts(doc)
            n_tok = len(doc)
            rule_map, vocab = self.matcher.rule_map, ctx.nlp.vocab
            for match_id, start, end in matches:
                rule = rule_map[vocab[match_id].text]
                k = bisect.bisect_right(starts, start) - 1
                sent_end = starts[k + 1] if k + 1 < len(starts) else n_tok
                lo, hi = modifier_scope(rule, start, end, starts[k], sent_end)
                graph.modifiers.append(ConTextModifier(rule, start, end, doc, scope_start=lo, scope_end=hi))
            graph.update_scopes()
            self._apply_modifiers(graph)
            for target, modifier in graph.edges:
                target._.modifiers += (modifier,)
            if ctx.context_attributes_mapping:
                ctx.set_context_attributes(graph.edges)
        doc._.context_graph = graph
        return doc

    @staticmethod
    def _apply_modifiers(graph: Any) -> None:
        """``ConTextGraph.apply_modifiers`` (no modifier pruning) with its scope test done first, inline."""
        modifiers = graph.modifiers
        scopes = [m.scope_span for m in modifiers]
        for target in graph.targets:
            t0, t1 = target.start, target.end
            for modifier, (a0, a1) in zip(modifiers, scopes, strict=True):
                # medspacy.util.tuple_overlaps(scope, (t0, t1)): a pair failing it is never modified
                if (a0 <= t0 < a1 or a0 < t1 <= a1) and modifier.modifies(target):
                    modifier.modify(target)
        edges = []
        for modifier in modifiers:
            modifier.reduce_targets()
            for target in modifier._targets:
                edges.append((target, modifier))
        graph.edges = edges
