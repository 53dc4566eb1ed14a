"""Label a whole report table: stream rows in chunks through a process pool, write labels and evidence."""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import itertools
import logging
import multiprocessing
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from exact_ct.config import PositiveInt, Share
from exact_ct.io import atomic_path, sha256_file
from exact_ct.parallel import current_dask_address, map_ordered
from exact_ct.reports.labeller import DEFAULT_IGNORED_SECTIONS, ReportLabeller
from exact_ct.reports.learned import LAYER_FILE, LearnedLayer, load_layer
from exact_ct.reports.policy import BinaryPolicy, to_binary
from exact_ct.reports.rules import RuleSet, load_rules
from exact_ct.reports.table import QUARANTINE_COLUMNS, ReportTable
from exact_ct.schema import ABNORMALITIES

log = logging.getLogger(__name__)

EVIDENCE_COLUMNS = (
    "report_id", "abnormality", "value", "start_char", "end_char", "section", "laterality", "lobe",
    "size_mm", "mention", "modifiers", "note", "sentence",
)  # fmt: skip

Chunk = list[tuple[str, str]]


class ChunkResult(NamedTuple):
    """What a worker sends back for one chunk: labels per report, and the chunk's evidence as CSV text.

    The evidence rows are formatted in the worker: one string crosses the process boundary instead of
    ~14 tuples of 13 fields per report, and the parent only copies it to the file.
    """

    labels: list[tuple[str, tuple[int | None, ...]]]
    n_mentions: int
    evidence_csv: str
    n_changed: int = 0  # labels the learned layer changed


@dataclass(frozen=True)
class LabelConfig:
    """Settings of a labelling run (the ``parse_reports`` section of params.yaml)."""

    workers: PositiveInt = 2
    chunk_size: PositiveInt = 200
    max_chars: PositiveInt = 50_000
    max_quarantine_share: Share = 0.5
    rules_dir: str | None = None
    #: apply ``learned_layer.json`` of the rules folder (``exact fit-labeller``) on top of the rules
    learned_layer: bool = False
    ignore_sections: tuple[str, ...] = DEFAULT_IGNORED_SECTIONS
    #: deprecated, ignored: the binary view is set once, in ``build_dataset.binary_policy`` (warns for
    #: one release, then the key is rejected like any unknown key)
    binary_policy: BinaryPolicy | None = None

    def __post_init__(self) -> None:
        if self.binary_policy is not None:
            warnings.warn(
                "params.yaml parse_reports.binary_policy is deprecated and ignored: the binary view used for "
                "training is set once, in build_dataset.binary_policy (parse_reports writes 1/0/-1/empty). "
                "Remove the key; the next release rejects it",
                FutureWarning,
                stacklevel=2,
            )


# One labeller per process (rule objects do not pickle): built in the parent, which forked workers
# inherit, or by the pool initializer where processes are spawned. A later run in the same process
# with equal rules and ignored sections reuses it. The learned layer, when on, is applied after it.
_LABELLER: ReportLabeller | None = None
_LAYER: LearnedLayer | None = None


def _init_worker(rules: RuleSet, ignore_sections: tuple[str, ...], layer: LearnedLayer | None = None) -> None:
    global _LABELLER, _LAYER
    current = _LABELLER
    if current is None or current.rules != rules or current.ignore_sections != frozenset(ignore_sections):
        _LABELLER = ReportLabeller(rules, ignore_sections)
    _LAYER = layer


def _fmt_size(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def label_chunk(chunk: Chunk) -> ChunkResult:
    """Label (id, text) pairs with this process's labeller; evidence comes back as CSV text (no header)."""
    assert _LABELLER is not None, "worker not initialised"
    labels: list[tuple[str, tuple[int | None, ...]]] = []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    n_mentions = 0
    results = _LABELLER.label_many([text for _, text in chunk])
    n_changed = 0
    if _LAYER is not None:
        layered = [_LAYER.apply(r) for r in results]
        n_changed = sum(
            a != b
            for r, s in zip(results, layered, strict=True)
            for a, b in zip(r.labels, s.labels, strict=True)
        )
        results = layered
    for (rid, _), res in zip(chunk, results, strict=True):
        writer.writerows(
            (rid, m.abnormality, "" if m.value is None else m.value, m.start_char, m.end_char, m.section,
             m.laterality, m.lobe, _fmt_size(m.size_mm), m.text, m.modifiers, m.note, m.sentence.strip())
            for m in res.mentions
        )  # fmt: skip
        n_mentions += len(res.mentions)
        labels.append((rid, res.labels))
    return ChunkResult(labels, n_mentions, buf.getvalue(), n_changed)


def label_chunk_with(
    setup: tuple[RuleSet, tuple[str, ...], LearnedLayer | None], chunk: Chunk
) -> ChunkResult:
    """:func:`label_chunk` in a process that may not have its labeller yet (a Dask worker)."""
    _init_worker(*setup)
    return label_chunk(chunk)


def _chunks(rows: Iterable[Any], size: int) -> Iterator[Chunk]:
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield [(r.report_id, r.text) for r in batch]


def map_chunks(
    chunks: Iterable[Chunk],
    rules: RuleSet,
    ignore_sections: tuple[str, ...],
    workers: int,
    layer: LearnedLayer | None = None,
) -> Iterator[ChunkResult]:
    """Label chunks in order with at most ``2 * workers`` chunks in flight, so memory stays flat.

    The local pool is this module's own, not ``exact_ct.parallel.map_ordered``'s: the medspacy pipeline
    is built once, in this process, before the workers fork. On a Dask cluster
    (``exact_ct.parallel.use_backend``) each worker builds its own at its first chunk.
    """
    if current_dask_address():
        yield from map_ordered(
            label_chunk_with, chunks, shared=(rules, ignore_sections, layer), progress=False
        )
        return
    _init_worker(rules, ignore_sections, layer)
    if workers <= 1:
        yield from map(label_chunk, chunks)
        return
    # Importing spaCy + medspacy costs ~6 CPU-seconds per process (torch via thinc, nltk via quickumls)
    # and building the pipeline ~0.5 s: forked workers inherit the parent's labeller instead of paying
    # both again. Without fork (macOS, Windows) each worker builds its own through the initializer.
    if "fork" in multiprocessing.get_all_start_methods() and sys.platform.startswith("linux"):
        pool_kwargs: dict[str, Any] = {"mp_context": multiprocessing.get_context("fork")}
    else:
        pool_kwargs = {"initializer": _init_worker, "initargs": (rules, ignore_sections, layer)}
    with ProcessPoolExecutor(max_workers=workers, **pool_kwargs) as pool:
        pending: list[Future[ChunkResult]] = []
        it = iter(chunks)
        # Forked workers start on the first submit: frozen objects (the imported modules, the pipeline)
        # are left out of the workers' garbage collections and their pages are not copied by them.
        gc.freeze()
        try:
            for chunk in itertools.islice(it, 2 * workers):
                pending.append(pool.submit(label_chunk, chunk))
        finally:
            gc.unfreeze()  # this process collects as before
        while pending:
            result = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(label_chunk, nxt))
            yield result


@dataclass
class LabelSummary:
    """Counts of one run (no text, no identifiers): what the stage writes to reports/parse_reports/B.json."""

    rows_read: int = 0
    labelled: int = 0
    quarantined: int = 0
    mentions: int = 0
    quarantine_rules: dict[str, int] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    binary_positive: dict[str, int] = field(default_factory=dict)
    delimiter: str = ","
    id_column: str = ""
    text_columns: list[str] = field(default_factory=list)
    rules_digest: str = ""
    layer_digest: str = ""
    layer_changed: int = 0

    @property
    def quarantine_share(self) -> float:
        return self.quarantined / self.rows_read if self.rows_read else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "labelled": self.labelled,
            "quarantined": self.quarantined,
            "quarantine_share": round(self.quarantine_share, 6),
            "quarantine_rules": dict(sorted(self.quarantine_rules.items())),
            "mentions": self.mentions,
            "labels": self.labels,
            "binary_positive": self.binary_positive,
            "delimiter": self.delimiter,
            "id_column": self.id_column,
            "text_columns": self.text_columns,
            "rules_sha256": self.rules_digest,
            "learned_layer_sha256": self.layer_digest,
            "learned_layer_changed": self.layer_changed,
        }


def _cell(v: int | None) -> str:
    return "" if v is None else str(v)


def label_table(
    in_path: str | Path,
    labels_out: str | Path,
    *,
    evidence_out: str | Path | None = None,
    quarantine_out: str | Path | None = None,
    id_column: str | None = None,
    text_columns: Sequence[str] | None = None,
    binary: BinaryPolicy | None = None,
    config: LabelConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> LabelSummary:
    """Label every report of ``in_path`` and write ``labels_out`` (id column + the 18 abnormalities).

    Values are 1/0/-1/empty, or 0/1 (empty where masked) under the policy ``binary`` when one is given;
    the summary's ``binary_positive`` counts positives under it (else under CT-RATE's convention,
    ``BinaryPolicy()``). Rows that cannot be labelled go to ``quarantine_out`` (path, line, id, rule,
    message); every other row is labelled. All outputs are written atomically; the input is only read.
    """
    cfg = config or LabelConfig()
    policy = binary or BinaryPolicy()
    rules = load_rules(cfg.rules_dir)
    layer = None
    layer_digest = ""
    if cfg.learned_layer:
        layer_path = Path(rules.source) / LAYER_FILE
        layer = load_layer(layer_path, rules.digest)
        layer_digest = sha256_file(layer_path)
    table = ReportTable(in_path, id_column, text_columns, max_chars=cfg.max_chars)
    summary = LabelSummary(
        delimiter=table.delimiter,
        id_column=table.id_name,
        text_columns=table.text_names,
        rules_digest=rules.digest,
        layer_digest=layer_digest,
    )
    counts: dict[str, Counter[str]] = {a: Counter() for a in ABNORMALITIES}
    positives: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        labels_tmp = stack.enter_context(atomic_path(labels_out))
        lf = stack.enter_context(open(labels_tmp, "w", encoding="utf-8", newline=""))
        lw = csv.writer(lf, lineterminator="\n")
        lw.writerow([table.id_name, *ABNORMALITIES])
        ef = None
        if evidence_out is not None:
            ev_tmp = stack.enter_context(atomic_path(evidence_out))
            ef = stack.enter_context(open(ev_tmp, "w", encoding="utf-8", newline=""))
            csv.writer(ef, lineterminator="\n").writerow(EVIDENCE_COLUMNS)
        chunks = _chunks(table, cfg.chunk_size)
        for result in map_chunks(chunks, rules, cfg.ignore_sections, cfg.workers, layer):
            for rid, labels in result.labels:
                binary_labels = [to_binary(v, policy) for v in labels]
                lw.writerow([rid, *(_cell(v) for v in (binary_labels if binary is not None else labels))])
                for name, v, b in zip(ABNORMALITIES, labels, binary_labels, strict=True):
                    counts[name]["empty" if v is None else str(v)] += 1
                    positives[name] += b == 1
            if ef is not None:
                ef.write(result.evidence_csv)
            summary.mentions += result.n_mentions
            summary.layer_changed += result.n_changed
            summary.labelled += len(result.labels)
            if progress is not None:
                progress(len(result.labels))
        if quarantine_out is not None:
            q_tmp = stack.enter_context(atomic_path(quarantine_out))
            with open(q_tmp, "w", encoding="utf-8", newline="") as qf:
                qw = csv.writer(qf, lineterminator="\n")
                qw.writerow(QUARANTINE_COLUMNS)
                qw.writerows(q.row() for q in table.quarantined)
    summary.rows_read = table.rows_read
    summary.quarantined = len(table.quarantined)
    summary.quarantine_rules = dict(Counter(q.rule for q in table.quarantined))
    summary.labels = {a: {k: counts[a][k] for k in ("1", "0", "-1", "empty")} for a in ABNORMALITIES}
    summary.binary_positive = {a: int(positives[a]) for a in ABNORMALITIES}
    for q in table.quarantined:
        # Line numbers and rules only: ids may be accession numbers outside the pipeline.
        log.warning("%s line %d: quarantined (%s): %s", Path(q.path).name, q.line, q.rule, q.message)
    return summary
