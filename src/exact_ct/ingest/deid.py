"""De-identification of report text and of paths written by ingest (names, ids and dates removed).

Two layers: the identifiers read from the study's own DICOM headers (and its reports.csv row) are
replaced first, by exact match; then Microsoft Presidio's analyzer (offline: pattern recognizers only,
no NER model, no network) finds the identifiers no header holds: phone numbers (Google's
libphonenumber), US SSN, UK NHS numbers (checksum), e-mail addresses, dates, credit-card and IBAN
numbers, IP addresses, plus this module's recognizers for spelled-out dates, record numbers,
addresses and postcodes, and names after a title or a relation word ("Mr", "Dr", "daughter").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Dates in the usual report spellings; all are dropped (replaced by a token), never shifted, because
#: nothing downstream needs them.
_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE_PATTERNS = (
    r"\b(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])\b",  # 2020-03-04
    r"\b(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)?\d{2}\b",  # 04.03.2020, 4/3/20
    r"\b(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])/(?:19|20)?\d{2}\b",  # 03/24/2020
    r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b",  # 20200304 (DICOM DA)
    rf"\b(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?\s+{_MONTHS}\s*,?\s+(?:19|20)\d{{2}}\b",  # 4 March 2020
    rf"\b{_MONTHS}\s+(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?\s*,?\s+(?:19|20)\d{{2}}\b",  # March 4, 2020
)
#: Dates in free text (ISO, European, US, DICOM DA, "4 March 2020", "March 4, 2020") -> DATE_TOKEN.
DATE_RE = re.compile("|".join(_DATE_PATTERNS), re.IGNORECASE)
#: Long digit runs are record numbers, phone numbers or ids; no finding is written with 7+ digits.
#: (UIDs and decimals such as 1.2.840.10008 are left alone: a dot joins the digits to a number.)
LONG_NUMBER_RE = re.compile(r"(?<!\d)(?<!\d\.)\d{7,}(?!\d|\.\d)")

DATE_TOKEN = "[DATE]"
ID_TOKEN = "[ID]"
NAME_TOKEN = "[REDACTED]"
PHONE_TOKEN = "[PHONE]"
EMAIL_TOKEN = "[EMAIL]"
ADDRESS_TOKEN = "[ADDRESS]"
MIN_LENGTH = 3

#: Presidio entity -> the token written in its place. Entities not listed are not requested: the
#: weak US driver-licence / passport / bank-number patterns match vertebra names (T12) and sizes.
ENTITY_TOKENS = {
    "PHONE_NUMBER": PHONE_TOKEN,
    "US_SSN": ID_TOKEN,
    "UK_NHS": ID_TOKEN,
    "CREDIT_CARD": ID_TOKEN,
    "IBAN_CODE": ID_TOKEN,
    "IP_ADDRESS": ID_TOKEN,
    "RECORD_NUMBER": ID_TOKEN,
    "EMAIL": EMAIL_TOKEN,
    "DATE_TIME": DATE_TOKEN,
    "SPELLED_DATE": DATE_TOKEN,
    "STREET_ADDRESS": ADDRESS_TOKEN,
    "POSTCODE": ADDRESS_TOKEN,
    "CONTEXT_NAME": NAME_TOKEN,
}
_PRESIDIO_BUILTIN = (
    "PhoneRecognizer",
    "UsSsnRecognizer",
    "NhsRecognizer",
    "CreditCardRecognizer",
    "IbanRecognizer",
    "IpRecognizer",
    "DateRecognizer",
)
_ORD = r"(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_MONTH_WORD = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
_TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Rev)\.?"
_RELATION = (
    r"(?i:daughter|son|wife|husband|mother|father|brother|sister|partner|spouse|niece|nephew|"
    r"grandson|granddaughter|grandmother|grandfather|aunt|uncle|cousin|relative|next of kin|carer|"
    r"caregiver|guardian|friend|neighbou?r|patient name|patient|name|named|called|signed by|"
    r"reported by|dictated by|discussed with|informed|verified by|attending|referred by)"
)
_NAME_WORD = r"(?:[A-Z]')?[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?"
_STREET = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Close|Way|Boulevard|Blvd|Court|Ct|Place|Pl|"
    r"Crescent|Terrace|Gardens|Square|Sq|Hill|Park|Grove|Row|Mews|Parade|Walk|Highway|Hwy)\.?"
)
#: (entity, name, regex, score, case-sensitive). Names and addresses need the capital letters.
_CUSTOM_PATTERNS = (
    (
        "SPELLED_DATE",
        "day of month year",
        rf"\b{_ORD}\s+(?:of\s+)?{_MONTH_WORD},?\s+(?:(?:19|20)\d{{2}}|'\d{{2}})\b",
        0.9,
        False,
    ),
    ("SPELLED_DATE", "month day year", rf"\b{_MONTH_WORD}\s+{_ORD},?\s+(?:19|20)\d{{2}}\b", 0.9, False),
    ("SPELLED_DATE", "day-mon-year", rf"\b{_ORD}[-/ .]{_MONTH_WORD}[-/ .](?:19|20)?\d{{2}}\b", 0.9, False),
    ("SPELLED_DATE", "day of month", rf"\b{_ORD}\s+of\s+{_MONTH_WORD}(?!\w)", 0.8, False),
    (
        "SPELLED_DATE",
        "ordinal month",
        rf"\b(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)\s+{_MONTH_WORD}(?!\w)",
        0.8,
        False,
    ),
    (
        "SPELLED_DATE",
        "month ordinal",
        rf"\b{_MONTH_WORD}\s+(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)\b",
        0.8,
        False,
    ),
    ("SPELLED_DATE", "month year", rf"\b{_MONTH_WORD}\s+(?:19|20)\d{{2}}\b", 0.8, False),
    (
        "SPELLED_DATE",
        "numeric date",
        r"\b(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)?\d{2}\b",
        0.8,
        False,
    ),
    (
        "RECORD_NUMBER",
        "labelled record number",
        r"(?<=\b(?i:mrn|mr no|medical record(?: number| no)?|record (?:number|no)|hospital (?:number|no)|patient (?:id|number|no)|hosp(?:ital)? id|chart(?: number| no)?|acc(?:ession)?(?: number| no)?|nhs(?: number| no)?|ssn|id|ref(?:erence)?)\.?\s{0,3}(?:is|:|#|=|-)?\s{0,3})[A-Z0-9][A-Z0-9-]{3,}\b",
        0.9,
        True,
    ),
    ("RECORD_NUMBER", "long digit run", r"(?<![\d.])\d{6,}(?![\d]|\.\d)", 0.7, False),
    ("RECORD_NUMBER", "digit groups", r"(?<![\d.])\d{3}[- ]\d{2,4}[- ]\d{3,4}(?![\d]|\.\d)", 0.6, False),
    ("EMAIL", "e-mail", r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", 0.9, False),
    (
        "POSTCODE",
        "labelled postcode",
        r"(?<=\b(?i:zip(?: code)?|post ?code)\s{0,3}:?\s{0,3})(?:\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2})\b",
        0.9,
        True,
    ),
    ("POSTCODE", "UK postcode", r"\b(?:[A-Z]{1,2}\d[A-Z\d]?|GIR) ?\d[A-Z]{2}\b", 0.8, True),
    ("POSTCODE", "US state and ZIP", r"\b[A-Z]{2},?\s+\d{5}(?:-\d{4})?\b", 0.8, True),
    (
        "STREET_ADDRESS",
        "number and street",
        rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:{_NAME_WORD}\s+){{1,3}}{_STREET}(?!\w)",
        0.8,
        True,
    ),
    (
        "STREET_ADDRESS",
        "street then town",
        rf"(?<=\b{_STREET},?\s)(?:{_NAME_WORD})(?:\s{_NAME_WORD})?(?=,|\s[A-Z]{{1,2}}\d)",
        0.7,
        True,
    ),
    (
        "CONTEXT_NAME",
        "title and name",
        rf"(?<=\b{_TITLE}\s{{1,3}})(?:[A-Z]\.\s?)*{_NAME_WORD}(?:\s{_NAME_WORD})?",
        0.8,
        True,
    ),
    (
        "CONTEXT_NAME",
        "relation and name",
        rf"(?<=\b{_RELATION}\b[,:]?\s{{1,3}}(?:\(|{_TITLE}\s{{1,3}})?){_NAME_WORD}(?:\s{_NAME_WORD})?",
        0.7,
        True,
    ),
)


def name_parts(value: str) -> list[str]:
    """An identifier and its parts: 'DOE^JOHN^Q' -> the whole, 'DOE', 'JOHN'.

    Pieces shorter than MIN_LENGTH are left alone: they identify no one and would otherwise erase
    ordinary tokens such as '2' or 'MD' from findings.
    """
    value = value.strip()
    words = re.split(r"[\^\s,=]+", value)
    # Hyphenated and apostrophe names also by piece: a folder or report may write one piece alone.
    pieces = [q for w in words if re.search(r"[-']", w) for q in re.split(r"[-']+", w)]
    parts = list(dict.fromkeys(p for p in [*words, *pieces] if len(p) >= MIN_LENGTH))
    return [value, *parts] if len(value) >= MIN_LENGTH else parts


class Scrubber:
    """Removes known identifier strings (and any date or long number) from free text.

    ``replacements`` maps identifier -> replacement (e.g. accession -> its study pseudonym);
    ``identifiers`` are removed with ``[REDACTED]``. Matching is case-insensitive and, for
    identifiers starting and ending with a word character, on word boundaries only.
    """

    def __init__(
        self, identifiers: Iterable[str] = (), replacements: Mapping[str, str] | None = None
    ) -> None:
        table: dict[str, str] = {}
        for ident in identifiers:
            for part in name_parts(ident):
                table.setdefault(part.lower(), NAME_TOKEN)
        for ident, repl in (replacements or {}).items():
            if len(ident.strip()) >= MIN_LENGTH:
                table[ident.strip().lower()] = repl
        self._table = table
        # Longest first so that 'DOE^JOHN' is replaced before 'DOE'.
        keys = sorted(table, key=len, reverse=True)
        self._re = re.compile("|".join(_bounded(k) for k in keys), re.IGNORECASE) if keys else None

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._re is not None:  # the header-derived identifiers first
            text = self._re.sub(lambda m: self._table[m.group(0).lower()], text)
        text = scrub_free_text(text)
        text = DATE_RE.sub(DATE_TOKEN, text)
        return LONG_NUMBER_RE.sub(ID_TOKEN, text)


@functools.lru_cache(maxsize=1)
def _analyzer() -> Any:
    return build_analyzer(custom=True)


def build_analyzer(custom: bool = True) -> Any:
    """Presidio's analyzer with pattern recognizers only: a blank spaCy pipeline (tokens, no NER
    model to download) and no recognizer that looks anything up on the network (Presidio's URL and
    e-mail recognizers validate domains with tldextract, which fetches the public suffix list)."""
    import regex
    import spacy
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class _BlankSpacy(SpacyNlpEngine):
        def load(self) -> None:
            nlp = spacy.blank("en")
            nlp.max_length = 10**8  # a tokenizer only: no parser/NER memory to guard against
            self.nlp = {"en": nlp}  # type: ignore[assignment]  # presidio annotates it None until load()

    engine = _BlankSpacy(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
    loaded = {r.name for r in registry.recognizers}  # type: ignore[has-type]  # presidio leaves it untyped
    for extra in loaded - set(_PRESIDIO_BUILTIN):
        registry.remove_recognizer(extra)
    for entity, name, pattern, score, case_sensitive in _CUSTOM_PATTERNS if custom else ():
        flags = regex.M | regex.S | (0 if case_sensitive else regex.I)
        registry.add_recognizer(
            PatternRecognizer(
                supported_entity=entity,
                name=f"exact:{name}",
                patterns=[Pattern(name, pattern, score)],
                global_regex_flags=flags,
            )
        )
    return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])


def scrub_free_text(text: str, analyzer: Any = None) -> str:
    """Replace every span Presidio's analyzer finds (entities of ENTITY_TOKENS) with its token.

    Overlapping spans are merged; a merged span takes the token of its highest-scoring part.
    ``analyzer``: another :func:`build_analyzer` result (benchmarks), else the cached full one.
    """
    if not text.strip():
        return text
    engine = analyzer if analyzer is not None else _analyzer()
    results = engine.analyze(text, language="en", entities=list(ENTITY_TOKENS))
    spans = sorted((r.start, r.end, r.score, ENTITY_TOKENS[r.entity_type]) for r in results)
    merged: list[list[Any]] = []
    for start, end, score, token in spans:
        if merged and start < merged[-1][1]:
            last = merged[-1]
            if score > last[2]:
                last[2], last[3] = score, token
            last[1] = max(last[1], end)
        else:
            merged.append([start, end, score, token])
    out, pos = [], 0
    for start, end, _score, token in merged:
        out += [text[pos:start], token]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _bounded(token: str) -> str:
    esc = re.escape(token)
    left = r"(?<!\w)" if re.match(r"\w", token) else ""
    right = r"(?!\w)" if re.search(r"\w$", token) else ""
    return f"{left}{esc}{right}"
