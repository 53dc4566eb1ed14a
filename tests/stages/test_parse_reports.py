"""The DVC stage `parse_reports@<batch>`: reads its params section, writes labels/evidence/quarantine/summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from exact_ct.config import ConfigError
from exact_ct.schema import ABNORMALITIES
from stages.parse_reports import main

REPO = Path(__file__).resolve().parents[2]


def write_params(root: Path, **overrides: object) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    section = {**params["parse_reports"], "workers": 1, **overrides}
    section["rules_dir"] = str(REPO / "src" / "exact_ct" / "rules")
    params["parse_reports"] = section
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def write_reports(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["study_id", "patient_id", "findings", "impression"])
        w.writerows(rows)
    return path


def read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def argv(tmp: Path, params: Path, reports: Path) -> list[str]:
    return ["--params", str(params), "--batch", "b1", "--in", str(reports),
            "--out", str(tmp / "interim" / "parse_reports" / "b1"),
            "--summary", str(tmp / "reports" / "parse_reports" / "b1.json")]  # fmt: skip


def test_stage_writes_outs_and_a_summary_whose_counts_add_up(tmp_path: Path) -> None:
    reports = write_reports(
        tmp_path / "ingest" / "reports.csv",
        [
            (
                "s-1",
                "p-1",
                "Small right pleural effusion. A 6 mm nodule in the left lower lobe.",
                "Effusion.",
            ),
            ("s-2", "p-2", "No pleural effusion.", "Normal chest CT."),
            ("s-3", "p-3", "", ""),
        ],
    )
    assert main(argv(tmp_path, write_params(tmp_path), reports)) == 0
    out = tmp_path / "interim" / "parse_reports" / "b1"
    labels = read(out / "labels.csv")
    assert list(labels[0]) == ["study_id", *ABNORMALITIES]
    assert [(r["study_id"], r["Pleural effusion"], r["Lung nodule"]) for r in labels] == [
        ("s-1", "1", "1"),
        ("s-2", "0", ""),
    ]
    evidence = read(out / "evidence.csv")
    nodule = next(e for e in evidence if e["abnormality"] == "Lung nodule")
    assert (nodule["report_id"], nodule["lobe"], nodule["size_mm"], nodule["section"]) == (
        "s-1",
        "LLL",
        "6",
        "findings",
    )
    assert [q["rule"] for q in read(out / "quarantine.csv")] == ["empty_report"]
    summary = json.loads((tmp_path / "reports" / "parse_reports" / "b1.json").read_text())
    assert (summary["rows_read"], summary["labelled"], summary["quarantined"]) == (3, 2, 1)
    assert summary["labels"]["Pleural effusion"] == {"1": 1, "0": 1, "-1": 0, "empty": 0}
    assert summary["binary_positive"]["Pleural effusion"] == 1
    text = json.dumps(summary)
    assert "6 mm" not in text and "Small right" not in text and "p-1" not in text  # counts only


def test_stage_is_deterministic(tmp_path: Path) -> None:
    reports = write_reports(tmp_path / "reports.csv", [("s-1", "p", "Possible atelectasis.", "Emphysema.")])
    params = write_params(tmp_path)
    assert main(argv(tmp_path / "a", params, reports)) == 0
    assert main(argv(tmp_path / "b", params, reports)) == 0
    for name in ("labels.csv", "evidence.csv", "quarantine.csv"):
        a = (tmp_path / "a" / "interim" / "parse_reports" / "b1" / name).read_bytes()
        assert a == (tmp_path / "b" / "interim" / "parse_reports" / "b1" / name).read_bytes()


def test_stage_fails_loudly_when_too_many_reports_are_quarantined(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = write_reports(tmp_path / "reports.csv", [("s-1", "p", "", ""), ("s-2", "p", "Emphysema.", "")])
    assert main(argv(tmp_path, write_params(tmp_path, max_quarantine_share=0.25), reports)) == 1
    assert "max_quarantine_share" in capsys.readouterr().err


def test_unknown_params_key_is_rejected(tmp_path: Path) -> None:
    reports = write_reports(tmp_path / "reports.csv", [("s-1", "p", "Emphysema.", "")])
    with pytest.raises(ConfigError, match="parse_reports"):
        main(argv(tmp_path, write_params(tmp_path, worker=3), reports))


def test_stage_applies_the_learned_layer_when_switched_on(tmp_path: Path) -> None:
    from exact_ct.io import sha256_file

    reports = write_reports(
        tmp_path / "reports.csv", [("s-1", "p", "Atelectasis in the right lower lobe.", "Atelectasis.")]
    )
    shipped = REPO / "src" / "exact_ct" / "rules" / "learned_layer.json"
    for on in (False, True):
        root = tmp_path / str(on)
        root.mkdir()
        assert main(argv(root, write_params(root, learned_layer=on), reports)) == 0
        summary = json.loads((root / "reports" / "parse_reports" / "b1.json").read_text())
        assert summary["learned_layer_sha256"] == (sha256_file(shipped) if on else "")
        assert summary["learned_layer_changed"] == 0
        assert read(root / "interim" / "parse_reports" / "b1" / "labels.csv")[0]["Atelectasis"] == "1"
