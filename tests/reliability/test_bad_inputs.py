"""A bad-input hospital drop through ingest -> parse_reports -> pseudo_masks: every case ends in its named
quarantine reason, the good studies finish, and every input is accounted for (in = used + quarantined)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from bad_corpus import DICOM_CASES, Case, build_corpus

from exact_ct.config import section
from exact_ct.ingest import RULES, IngestConfig, ingest_drop
from exact_ct.masks import PseudoMasksConfig
from exact_ct.masks.batch import run_batch
from exact_ct.reports.batch import LabelConfig, label_table

REPO = Path(__file__).resolve().parents[2]


def _outcome(case: Case, ingest: Path, parse: Path, masks: Path) -> list[tuple[str, str]]:
    """Every (stage, rule) the outputs record for this case; ("", "") when it came out of all three."""
    found: list[tuple[str, str]] = []
    q = pd.read_csv(ingest / "quarantine.csv", dtype=str, keep_default_na=False)
    manifest = pd.read_csv(ingest / "manifest.csv", dtype=str)
    folder = f"dicom/{case.name}/" if case.name in DICOM_CASES else None
    mine = q[
        q["path"].str.startswith(folder)
        if folder
        else q["path"].eq(f"nifti/{case.study_id}.nii.gz") | q["message"].str.contains(case.study_id)
    ]
    # Study-level rules name the study in the message; file-level rules are matched by the case's folder.
    found += [("ingest", r) for r in sorted(set(mine["rule"]))]
    if case.study_id in set(manifest["study_id"]):
        pq = pd.read_csv(parse / "quarantine.csv", dtype=str, keep_default_na=False)
        found += [("parse_reports", r) for r in sorted(set(pq.loc[pq["id"] == case.study_id, "rule"]))]
        mq = pd.read_csv(masks / "quarantine.csv", dtype=str, keep_default_na=False)
        found += [("pseudo_masks", r) for r in sorted(set(mq.loc[mq["study_id"] == case.study_id, "rule"]))]
        labelled = case.study_id in set(pd.read_csv(parse / "labels.csv", dtype=str)["study_id"])
        masked = (masks / "masks" / f"{case.study_id}.nii.gz").is_file()
        if labelled and masked and not found:
            found.append(("", ""))
    return found


@pytest.mark.slow
def test_every_bad_input_ends_in_its_named_reason_and_nothing_is_lost(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # rules_dir in params.yaml is relative to the repository
    drop, cases = build_corpus(tmp_path / "corpus", shared_data)
    before = {p: p.stat().st_mtime_ns for p in drop.rglob("*") if p.is_file()}
    ingest, parse, masks = tmp_path / "ingest", tmp_path / "parse", tmp_path / "masks"
    params = REPO / "params.yaml"

    summary = ingest_drop(drop, ingest, section(IngestConfig, "ingest", params), progress=False)
    labels = label_table(
        ingest / "reports.csv",
        parse / "labels.csv",
        evidence_out=parse / "evidence.csv",
        quarantine_out=parse / "quarantine.csv",
        id_column="study_id",
        text_columns=["findings", "impression"],
        config=section(LabelConfig, "parse_reports", params),
    )
    mask_summary = run_batch(ingest, masks, section(PseudoMasksConfig, "pseudo_masks", params))

    # Each case ends exactly where the documented rules say, with its named reason.
    observed = {(c.name, c.accession): _outcome(c, ingest, parse, masks) for c in cases}
    expected = {(c.name, c.accession): [(c.stage, c.rule)] for c in cases}
    assert observed == expected

    # Ingest: every file and every study accounted for, only documented rule names used.
    skipped, quarantined = sum(summary["files_skipped"].values()), sum(summary["files_quarantined"].values())
    assert summary["files_in"] == summary["files_used"] + skipped + quarantined
    assert summary["studies_found"] == summary["studies_used"] + sum(summary["studies_quarantined"].values())
    q = pd.read_csv(ingest / "quarantine.csv", dtype=str)
    assert set(q["rule"]) <= set(RULES)
    assert len(q) == quarantined + sum(summary["reports_quarantined"].values())
    manifest = pd.read_csv(ingest / "manifest.csv", dtype=str)
    assert len(manifest) == summary["studies_used"]
    assert sorted(p.name for p in (ingest / "volumes").iterdir()) == sorted(
        f"{s}.nii.gz" for s in manifest["study_id"]
    )
    # The wrong-modality files never form a study, so their report row is an orphan (named, not lost).
    assert summary["reports_quarantined"] == {
        "invalid_utf8": 1,
        "report_too_long": 1,
        "report_without_study": 2,
    }

    # parse_reports: every de-identified report row is labelled or quarantined.
    assert labels.rows_read == summary["reports_used"] == labels.labelled + labels.quarantined
    # pseudo_masks: every used study has a mask or a quarantine row.
    assert mask_summary["studies"] == len(manifest) == mask_summary["masks"] + mask_summary["quarantined"]

    # Units in = used + quarantined, over the whole pipeline.
    finished = [c for c in cases if not c.stage]
    stopped = Counter(c.stage for c in cases if c.stage)
    assert len(cases) == len(finished) + sum(stopped.values())
    assert len(finished) == 3 and stopped == {"ingest": 14, "parse_reports": 1}

    # Inputs are never modified.
    assert {p: p.stat().st_mtime_ns for p in drop.rglob("*") if p.is_file()} == before
