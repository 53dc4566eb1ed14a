"""De-identification of report text and of paths written by ingest (names, ids and dates removed)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

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
_DATE_RE = re.compile("|".join(_DATE_PATTERNS), re.IGNORECASE)
#: Long digit runs are record numbers, phone numbers or ids; no finding is written with 7+ digits.
#: (UIDs and decimals such as 1.2.840.10008 are left alone: a dot joins the digits to a number.)
_LONG_NUMBER_RE = re.compile(r"(?<!\d)(?<!\d\.)\d{7,}(?!\d|\.\d)")

DATE_TOKEN = "[DATE]"
ID_TOKEN = "[ID]"
NAME_TOKEN = "[REDACTED]"
MIN_LENGTH = 3


def name_parts(value: str) -> list[str]:
    """An identifier and its parts: 'DOE^JOHN^Q' -> the whole, 'DOE', 'JOHN'.

    Pieces shorter than MIN_LENGTH are left alone: they identify no one and would otherwise erase
    ordinary tokens such as '2' or 'MD' from findings.
    """
    value = value.strip()
    parts = [p for p in re.split(r"[\^\s,=]+", value) if len(p) >= MIN_LENGTH]
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
        if self._re is not None:
            text = self._re.sub(lambda m: self._table[m.group(0).lower()], text)
        text = _DATE_RE.sub(DATE_TOKEN, text)
        return _LONG_NUMBER_RE.sub(ID_TOKEN, text)


def _bounded(token: str) -> str:
    esc = re.escape(token)
    left = r"(?<!\w)" if re.match(r"\w", token) else ""
    right = r"(?!\w)" if re.search(r"\w$", token) else ""
    return f"{left}{esc}{right}"
