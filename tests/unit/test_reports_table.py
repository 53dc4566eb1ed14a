"""Bad report tables: each problem is a clear error or a per-row quarantine, and every other row is labelled."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from exact_ct.cli import main as cli_main
from exact_ct.reports.batch import LabelConfig, label_table
from exact_ct.reports.table import ReportTable, sniff_delimiter
from exact_ct.schema import ABNORMALITIES

GOOD = "No pleural effusion. A 4 mm nodule in the right upper lobe."


def read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def run(tmp_path: Path, src: Path, **kw: object) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    out, quarantine = tmp_path / "labels.csv", tmp_path / "quarantine.csv"
    label_table(src, out, quarantine_out=quarantine, config=LabelConfig(workers=1, max_chars=20_000), **kw)
    return read(out), read(quarantine)


def test_bad_rows_are_quarantined_with_reasons_and_the_rest_labelled(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    rows = [
        ["study_id", "findings", "impression"],
        ["s1", GOOD, "Nodule."],
        ["s2", "", "   "],  # empty
        ["s3", "x" * 100_000, ""],  # far too long
        ["s1", GOOD, ""],  # duplicate id
        ["", GOOD, ""],  # no id
        ["s4", "Small left pleural effusion.", ""],
    ]
    write_csv(src, rows)
    with open(src, "ab") as f:  # a row with bytes that are not UTF-8
        f.write(b's5,"Pleural effusion \xff\xfe here.",\n')
    labels, quarantine = run(tmp_path, src)
    assert [r["study_id"] for r in labels] == ["s1", "s4"]
    assert labels[0]["Lung nodule"] == "1" and labels[0]["Pleural effusion"] == "0"
    assert labels[1]["Pleural effusion"] == "1"
    reasons = {(q["id"], q["rule"]) for q in quarantine}
    assert reasons == {
        ("s2", "empty_report"),
        ("s3", "too_long"),
        ("s1", "duplicate_id"),
        ("", "missing_id"),
        ("s5", "invalid_utf8"),
    }
    too_long = next(q for q in quarantine if q["rule"] == "too_long")
    assert too_long["message"].startswith("report has 1000") and "max_chars=20000" in too_long["message"]


def test_missing_columns_name_what_exists(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [["study_id", "body"], ["s1", GOOD]])
    with pytest.raises(ValueError, match=r"no report text column.*'study_id', 'body'"):
        ReportTable(src)
    with pytest.raises(ValueError, match=r"text column\(s\) \['impression'\] not found.*'body'"):
        ReportTable(src, text_columns=["body", "impression"])
    with pytest.raises(ValueError, match=r"id column 'accession' not found"):
        ReportTable(src, id_column="accession", text_columns=["body"])


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_other_delimiters_are_sniffed(tmp_path: Path, delimiter: str) -> None:
    src = write_csv(tmp_path / "in.csv", [["accession_number", "report_text"], ["A1", GOOD + " Cardiomegaly, mild."]],
                    delimiter)  # fmt: skip
    labels, quarantine = run(tmp_path, src)
    assert quarantine == [] and labels[0]["accession_number"] == "A1"
    assert labels[0]["Cardiomegaly"] == "1" and labels[0]["Lung nodule"] == "1"


def test_sniffer_ignores_delimiters_inside_quotes() -> None:
    assert sniff_delimiter('"a;b";"c,d";e\n') == ";"
    assert sniff_delimiter("only_one_column\n") == ","


def test_text_columns_are_joined_with_section_headers(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [["id", "clinical_information", "findings"],
                                          ["1", "Rule out pneumothorax. Emphysema.", "Normal lungs."]])  # fmt: skip
    out, ev = tmp_path / "labels.csv", tmp_path / "evidence.csv"
    label_table(src, out, evidence_out=ev, config=LabelConfig(workers=1))
    assert read(out)[0]["Emphysema"] == ""  # only in the clinical information
    evidence = read(ev)
    assert [(e["abnormality"], e["section"], e["value"], e["note"]) for e in evidence] == [
        ("Emphysema", "clinical_information", "", "section clinical_information")
    ]


def test_cli_writes_labels_binary_evidence_and_quarantine(tmp_path: Path) -> None:
    src = write_csv(
        tmp_path / "reports.csv",
        [["AccessionNo", "report_text"], ["r1", GOOD], ["r2", "Atelectasis cannot be excluded."], ["r3", ""]],
    )
    out = tmp_path / "out.csv"
    assert (
        cli_main(
            ["label-reports", str(src), str(out), "--workers", "1", "--evidence", str(tmp_path / "ev.csv")]
        )
        == 0
    )
    rows = read(out)
    assert list(rows[0]) == ["AccessionNo", *ABNORMALITIES]
    assert (rows[0]["Pleural effusion"], rows[1]["Atelectasis"], rows[1]["Lung nodule"]) == ("0", "-1", "")
    assert read(tmp_path / "out.quarantine.csv")[0]["rule"] == "empty_report"
    assert {e["abnormality"] for e in read(tmp_path / "ev.csv")} == {
        "Pleural effusion",
        "Lung nodule",
        "Atelectasis",
    }

    out_bin = tmp_path / "bin.csv"
    assert cli_main(["label-reports", str(src), str(out_bin), "--binary", "--workers", "1"]) == 0
    rows = read(out_bin)
    assert (rows[0]["Pleural effusion"], rows[1]["Atelectasis"], rows[1]["Lung nodule"]) == ("0", "1", "0")
    assert (
        cli_main(
            ["label-reports", str(src), str(out_bin), "--binary", "--uncertain", "mask", "--workers", "1"]
        )
        == 0
    )
    assert read(out_bin)[1]["Atelectasis"] == ""


def test_cli_missing_column_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "reports.csv", [["id", "report_text"], ["1", GOOD]])
    assert (
        cli_main(["label-reports", str(src), str(tmp_path / "o.csv"), "--text-column", "findings,impression"])
        == 2
    )
    err = capsys.readouterr().err
    assert "['findings', 'impression'] not found" in err and "'report_text'" in err
    assert not (tmp_path / "o.csv").exists()


def test_process_pool_gives_the_same_labels_as_in_process(tmp_path: Path) -> None:
    texts = [GOOD, "Bilateral pleural effusion.", "Emphysema. No nodule.", "Possible consolidation."] * 5
    src = write_csv(tmp_path / "in.csv", [["id", "report"], *[[str(i), t] for i, t in enumerate(texts)]])
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    label_table(src, one, config=LabelConfig(workers=1, chunk_size=3))
    label_table(src, two, config=LabelConfig(workers=2, chunk_size=3))
    assert one.read_bytes() == two.read_bytes()
    assert len(read(one)) == len(texts)
