"""The labeller's shortcuts (fast regex matchers, substring prefilters, token offsets) change no output.

Each shortcut skips work only when it cannot change the result; these tests compare the fast labeller
with the one that runs medspacy's own matchers and every sentence filter regex (``fast=False``), on
sentences where a shortcut decides something, and on real CT-RATE reports.
"""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exact_ct.reports import ReportLabeller
from exact_ct.reports.fastmatch import TokenOffsets, doc_cache

#: Texts where a shortcut matters: a ConText trigger only outside the target's sentence (the rule is
#: skipped) or inside it; targets whose required word sits inside a longer word (the anchor test must
#: still find it); upper case; non-ASCII letters (the sentence prefilter steps aside, and 'İ' changes
#: length when lower-cased, so the matchers fall back to medspacy's); routed and sentence-filtered rules.
TRICKY = [
    "History of smoking. Nodule in the right upper lobe.",
    "Nodule in the right upper lobe, with a history of lung cancer.",
    "Evaluate for pneumonia.\nConsolidation in the left lower lobe cannot be excluded.",
    "Subpleural and peribronchovascular ground-glass opacities; no pleural effusion.",
    "CALCIFIED ATHEROMATOUS PLAQUES IN THE CORONARY ARTERIES AND THE AORTA.",
    "Coronary calcium. Aortic wall calcification. Calcific plaques in the abdominal aorta only.",
    "No change in the known 8 mm nodule of the lingula; borderline cardiomegaly.",
    "Lymph nodes that did not reach pathological size in the mediastinum; enlarged lymph node 12 mm.",
    "Mediastinal lymphadenopathy (15 mm) and retroperitoneal lymph nodes.",
    "Pleural effusion İ on the right; no pericardial effusion.",
    "Emphysema in both lungs, ſmall bullae; the pacemaker leads are seen.",
    "Pleural effusion with thickening \u212a on the left. Atelectatic bands bilaterally?",
    'IMPRESSION: " Bronchiectatic changes " Mosaic attenuation pattern " No hiatal hernia "',
    "FINDINGS: Septal thickening and crazy paving; peribronchial thickening. Sternotomy wires.",
    "In a patient treated for pneumonia, ground-glass densities, effusion; evaluate for nodule, effusion.",
    "",
    "   \n\n  ",
]


@pytest.fixture(scope="module")
def fast() -> ReportLabeller:
    return ReportLabeller()


@pytest.fixture(scope="module")
def reference() -> ReportLabeller:
    return ReportLabeller(fast=False)


def _ctrate_reports(shared_data: Path, n: int) -> list[str]:
    path = shared_data / "reports" / "ctrate_manual_labels" / "train.csv"
    with open(path, encoding="utf-8", newline="") as f:
        return [row["report_text"] for _, row in zip(range(n), csv.DictReader(f), strict=False)]


@pytest.mark.parametrize("text", TRICKY)
def test_shortcuts_change_no_label_or_mention(
    fast: ReportLabeller, reference: ReportLabeller, text: str
) -> None:
    got, want = fast.label(text), reference.label(text)
    assert got.labels == want.labels
    assert got.mentions == want.mentions


def test_shortcuts_change_nothing_on_real_reports(
    fast: ReportLabeller, reference: ReportLabeller, shared_data: Path
) -> None:
    texts = _ctrate_reports(shared_data, 25)
    assert len(texts) == 25
    got, want = fast.label_many(texts), reference.label_many(texts)
    assert sum(len(r.mentions) for r in want) > 100  # the sample exercises the rules
    assert got == want


def test_another_medspacy_release_falls_back_to_plain_medspacy_with_the_same_labels(
    fast: ReportLabeller, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exact_ct.reports import fastmatch

    monkeypatch.setattr(fastmatch, "medspacy_version", lambda: "1.4.0")
    with pytest.warns(RuntimeWarning, match=r"medspacy 1\.4\.0 is installed.*running plain medspacy"):
        fallback = ReportLabeller()
    assert fast.fast and not fallback.fast
    assert "exact_sentencizer" not in fallback.nlp.pipe_names  # spaCy's own sentencizer, medspacy's matchers
    texts = _ctrate_reports(shared_data, 40)
    got, want = fallback.label_many(texts), fast.label_many(texts)
    assert sum(v is not None for r in want for v in r.labels) > 100  # the sample labels many findings
    assert got == want


def test_a_mention_inside_a_longer_word_is_still_found(fast: ReportLabeller) -> None:
    # 'coronary' holds the rule's literal 'oronary' in the middle of a word
    mentions = fast.label("Calcified plaques in the coronary arteries.").mentions
    assert [m.abnormality for m in mentions] == ["Coronary artery wall calcification"]
    assert mentions[0].text.lower().startswith("calcified")


def test_token_offsets_align_like_spacy_char_span(fast: ReportLabeller) -> None:
    text = "Right  lung:\n\n  a 5x4 mm nodule (RUL); no effusion.  \nEnd"
    doc = fast.nlp.make_doc(text)
    offsets = TokenOffsets(doc, len(text))
    rng = random.Random(0)
    pairs = [(a, b) for a in range(-1, len(text) + 1) for b in range(a + 1, len(text) + 2)]
    for start, end in rng.sample(pairs, 600):
        span = doc.char_span(start, end, alignment_mode="expand")
        first, stop = offsets.expand(start, end)
        if span is None:
            assert stop <= first, (start, end)
        else:
            assert (first, stop) == (span.start, span.end), (start, end)


def test_doc_cache_is_computed_once_and_matches_the_text(fast: ReportLabeller) -> None:
    doc = fast.doc("Nodule.\nEffusion; none.")
    cached = doc_cache(doc)
    assert cached is doc_cache(doc)
    assert cached.text == doc.text and cached.low == doc.text.lower()
    assert cached.tokens.starts == [t.idx for t in doc]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "...",
        "a.",
        ". a",
        "Nodule . . seen ! ? Effusion",
        '"x" "y"',
        "a;b;c",
        "• a • b",
        "Hello.\n\nWorld",
        "(A.) B",
    ],
)
def test_vectorised_sentencizer_splits_like_spacys(fast: ReportLabeller, text: str) -> None:
    import spacy

    from exact_ct.reports.pipeline import SENTENCE_PUNCT

    spacy_nlp = spacy.blank("en")
    spacy_nlp.add_pipe("sentencizer", config={"punct_chars": SENTENCE_PUNCT})
    got = fast.nlp.get_pipe("exact_sentencizer")(fast.nlp.make_doc(text))
    want = spacy_nlp(text)
    assert [t.is_sent_start for t in got] == [t.is_sent_start for t in want]


def _modifier_graph(labeller: ReportLabeller, text: str) -> list[tuple[Any, ...]]:
    from exact_ct.reports.pipeline import SPAN_GROUP

    doc = labeller.doc(text)
    return [
        (
            span.start,
            span.end,
            [(m.category, m.modifier_span, m.scope_span, m.num_targets) for m in span._.modifiers],
        )
        for span in doc.spans[SPAN_GROUP]
    ]


#: ConText cases: several triggers and targets in one sentence, terminations, scopes cut by max_scope,
#: triggers next to sentence ends (empty scopes), a target outside every scope, triggers without targets.
CONTEXT_CASES = [
    "No pleural effusion, but a nodule in the right lung and possible consolidation.",
    "Nodule. No",
    "No\nnodule is seen; effusion cannot be excluded.",
    "There is no evidence of pneumothorax or pleural effusion however emphysema is present.",
    "Consolidation in the lower lobes, likely atelectasis, is not seen in the upper lobes anymore.",
    "History of lymphoma: mediastinal lymph nodes are not enlarged. Possible? nodule.",
    "Nodule " + "in the right upper lobe of the lung with a smooth contour " * 3 + "was not observed.",
    "No change in the known nodule. No new nodule. Effusion: none.",
    "Possibly",
]


@pytest.mark.parametrize("text", CONTEXT_CASES + TRICKY)
def test_fast_context_builds_medspacys_modifier_graph(
    fast: ReportLabeller, reference: ReportLabeller, text: str
) -> None:
    assert _modifier_graph(fast, text) == _modifier_graph(reference, text)


def test_fast_context_matches_medspacy_on_real_reports(
    fast: ReportLabeller, reference: ReportLabeller, shared_data: Path
) -> None:
    texts = _ctrate_reports(shared_data, 25)[10:25]
    graphs = [_modifier_graph(fast, t) for t in texts]
    assert sum(len(mods) for g in graphs for _, _, mods in g) > 20  # the sample has modifiers
    assert graphs == [_modifier_graph(reference, t) for t in texts]


@pytest.mark.parametrize("direction", ["FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO"])
@pytest.mark.parametrize("max_scope", [None, 1, 2, 5])
def test_scope_from_sentence_starts_equals_medspacys(
    fast: ReportLabeller, direction: str, max_scope: int | None
) -> None:
    from medspacy.context import ConTextModifier, ConTextRule

    from exact_ct.reports.fastcontext import modifier_scope
    from exact_ct.reports.fastmatch import sentence_starts

    doc = fast.doc("One two three four. Five six seven eight nine ten; eleven twelve\nthirteen")
    rule = ConTextRule("x", "NEGATED_EXISTENCE", direction=direction, max_scope=max_scope)
    starts = sentence_starts(doc)
    for start in range(len(doc)):
        for end in range(start + 1, min(start + 3, len(doc)) + 1):
            want = ConTextModifier(rule, start, end, doc).scope_span  # medspacy walks doc[start].sent
            k = max(i for i, s in enumerate(starts) if s <= start)
            sent_end = starts[k + 1] if k + 1 < len(starts) else len(doc)
            assert modifier_scope(rule, start, end, starts[k], sent_end) == want, (start, end)


def test_light_import_skips_torch_and_defers_nltk() -> None:
    code = (
        "import sys\n"
        "from exact_ct.reports.imports import import_spacy_light\n"
        "import_spacy_light()\n"
        "import spacy, medspacy, thinc\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert type(sys.modules['nltk']).__name__ == '_Deferred'\n"
        "import nltk\n"
        "assert nltk.__version__ and type(sys.modules['nltk']).__name__ == 'module'\n"
        "import torch\n"  # hidden only while thinc was imported: a later import works
        "assert torch.tensor([1]).sum().item() == 1\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "text", ["", "plain ascii", "caf\u00e9 \u00fc", "x\udc80y", "\udcff", "\udc7f", "\udd00"]
)
def test_invalid_byte_test_matches_the_per_character_rule(text: str) -> None:
    from exact_ct.reports.table import has_invalid_bytes

    assert has_invalid_bytes(text) == any("\udc80" <= ch <= "\udcff" for ch in text)
