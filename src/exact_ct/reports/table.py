"""Read report tables robustly: sniff the delimiter, find the columns, quarantine bad rows with a reason."""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Id columns tried in order when none is named (our contract, CT-RATE, generic).
ID_CANDIDATES = ("study_id", "accession_number", "AccessionNo", "accession", "report_id", "VolumeName", "id")
#: Columns that together form a sectioned report, in reading order; each becomes "HEADER:\n text".
SECTION_COLUMNS = ("clinical_information", "indication", "technique", "comparison", "findings", "impression")
#: Single free-text columns tried in order when no sectioned columns exist.
TEXT_CANDIDATES = ("report_text", "report", "text", "Reports", "narrative", "report_body")
DELIMITERS = (",", ";", "\t", "|")
QUARANTINE_COLUMNS = ("path", "line", "id", "rule", "message")

# Reports can be long; the csv module's default 128 KiB field limit would abort the whole file instead.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class ReportRow:
    line: int
    report_id: str
    text: str


@dataclass(frozen=True)
class Quarantined:
    path: str
    line: int
    report_id: str
    rule: str
    message: str

    def row(self) -> list[str | int]:
        return [self.path, self.line, self.report_id, self.rule, self.message]


def sniff_delimiter(header_line: str) -> str:
    """The delimiter of a table from its header line (the most frequent of , ; TAB | outside quotes).

    The header is used rather than ``csv.Sniffer`` on the body because free-text reports are full of
    commas and semicolons that mislead it.
    """
    counts = {d: 0 for d in DELIMITERS}
    quoted = False
    for ch in header_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _find(header: Sequence[str], name: str) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return lowered.index(name.lower()) if name.lower() in lowered else None


def resolve_columns(
    header: Sequence[str], id_column: str | None, text_columns: Sequence[str] | None, path: str = ""
) -> tuple[int | None, list[int]]:
    """Indices of the id column (None = use the line number) and the text columns.

    Raises:
        ValueError: a named column is missing, or no text column can be found; the message lists the
            columns that do exist.
    """
    where = f"{path}: " if path else ""
    available = ", ".join(repr(h) for h in header)
    if id_column:
        id_idx = _find(header, id_column)
        if id_idx is None:
            raise ValueError(f"{where}id column {id_column!r} not found; columns are: {available}")
    else:
        id_idx = next((i for c in ID_CANDIDATES if (i := _find(header, c)) is not None), None)
    if text_columns:
        missing = [c for c in text_columns if _find(header, c) is None]
        if missing:
            raise ValueError(f"{where}text column(s) {missing} not found; columns are: {available}")
        text_idx = [i for c in text_columns if (i := _find(header, c)) is not None]
    else:
        text_idx = [i for c in SECTION_COLUMNS if (i := _find(header, c)) is not None]
        if not text_idx:
            text_idx = [i for c in TEXT_CANDIDATES if (i := _find(header, c)) is not None][:1]
        if not text_idx:
            raise ValueError(
                f"{where}no report text column found (tried {', '.join(SECTION_COLUMNS + TEXT_CANDIDATES)}); "
                f"name one with --text-column; columns are: {available}"
            )
    return id_idx, text_idx


def compose_report(header: Sequence[str], row: Sequence[str], text_idx: Sequence[int]) -> str:
    """Join the text columns into one report; several columns get section headers ("FINDINGS:\\n...")."""
    if len(text_idx) == 1:
        return row[text_idx[0]]
    parts = []
    for i in text_idx:
        body = row[i].strip()
        if body:
            title = header[i].strip().replace("_", " ").upper()
            parts.append(f"{title}:\n{body}")
    return "\n\n".join(parts)


#: Undecodable bytes arrive as lone surrogates (errors="surrogateescape").
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def has_invalid_bytes(text: str) -> bool:
    """Whether ``text`` holds bytes that were not UTF-8 (decoded with ``surrogateescape``: U+DC80..U+DCFF)."""
    # str.isascii reads a flag of the string (no scan); a regex search replaces a per-character loop
    return not text.isascii() and _ESCAPED_BYTE.search(text) is not None


def _clean(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8") if has_invalid_bytes(text) else text


class ReportTable:
    """Stream the reports of a CSV; bad rows are collected in :attr:`quarantined` as they are met."""

    def __init__(
        self,
        path: str | Path,
        id_column: str | None = None,
        text_columns: Sequence[str] | None = None,
        max_chars: int = 50_000,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: report table not found")
        self.max_chars = max_chars
        self.quarantined: list[Quarantined] = []
        self.rows_read = 0
        with open(self.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            first = f.readline()
        if not first.strip():
            raise ValueError(f"{self.path}: empty file, expected a header row")
        self.delimiter = sniff_delimiter(first)
        self.header = next(csv.reader([first], delimiter=self.delimiter))
        self.id_idx, self.text_idx = resolve_columns(self.header, id_column, text_columns, str(self.path))
        self.id_name = self.header[self.id_idx].strip() if self.id_idx is not None else "line"
        self.text_names = [self.header[i].strip() for i in self.text_idx]

    def _quarantine(self, line: int, rid: str, rule: str, message: str) -> None:
        self.quarantined.append(Quarantined(str(self.path), line, _clean(rid), rule, message))

    def __iter__(self) -> Iterator[ReportRow]:
        seen: dict[str, int] = {}
        with open(self.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            next(reader)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    raise ValueError(f"{self.path}: line {reader.line_num}: unreadable CSV ({e})") from None
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line is not a record
                self.rows_read += 1
                rid = row[self.id_idx].strip() if self.id_idx is not None and self.id_idx < len(row) else ""
                if self.id_idx is None:
                    rid = str(line)
                if len(row) != len(self.header):
                    self._quarantine(
                        line,
                        rid,
                        "malformed_row",
                        f"row has {len(row)} fields, header has {len(self.header)}",
                    )
                    continue
                if not rid:
                    self._quarantine(line, rid, "missing_id", f"empty {self.id_name!r}")
                    continue
                if has_invalid_bytes(rid):
                    self._quarantine(line, rid, "invalid_utf8", f"column {self.id_name!r} is not valid UTF-8")
                    continue
                if rid in seen:
                    self._quarantine(
                        line,
                        rid,
                        "duplicate_id",
                        f"id already used on line {seen[rid]}; first occurrence kept",
                    )
                    continue
                seen[rid] = line
                bad = [self.header[i] for i in self.text_idx if has_invalid_bytes(row[i])]
                if bad:
                    self._quarantine(
                        line, rid, "invalid_utf8", f"column(s) {bad} contain bytes that are not UTF-8"
                    )
                    continue
                text = compose_report(self.header, row, self.text_idx)
                if not text.strip():
                    self._quarantine(line, rid, "empty_report", f"no text in {', '.join(self.text_names)}")
                    continue
                if len(text) > self.max_chars:
                    self._quarantine(
                        line,
                        rid,
                        "too_long",
                        f"report has {len(text)} characters (max_chars={self.max_chars})",
                    )
                    continue
                yield ReportRow(line, rid, text)
