"""The pseudonymisation key: weak keys refused, the demo key only in demo/test mode, a changed key
stops ingest of a new batch (its fingerprint differs from the earlier batches')."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from exact_ct import privacy
from exact_ct.ingest import IngestConfig, ingest_drop
from tests.support.dicom_series import chest_phantom, write_series

KEY_A = "0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"
KEY_B = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("a", "characters"),
        (" ", "empty or only whitespace"),
        ("", "empty or only whitespace"),
        ("a" * 40, "too repetitive"),
        ("abababababababababab", "too repetitive"),
        (f" {KEY_A}", "whitespace"),
        ("short-key-123", "characters"),
    ],
)
def test_weak_keys_are_refused_in_every_mode(monkeypatch: pytest.MonkeyPatch, key: str, why: str) -> None:
    for mode in ("production", "demo", "test"):
        monkeypatch.setenv(privacy.MODE_ENV, mode)
        monkeypatch.setenv(privacy.KEY_ENV, key)
        with pytest.raises(privacy.WeakKeyError, match=why) as info:
            privacy.pseudonym_key()
        assert len(key.strip()) < 3 or key.strip() not in str(info.value)  # the key is never echoed


def test_strong_keys_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(privacy.MODE_ENV, "production")
    for key in (KEY_A, "correct horse battery staple 1987", "rel-audit-key-5c1f0e9a7b3d"):
        monkeypatch.setenv(privacy.KEY_ENV, key)
        assert privacy.pseudonym_key() == key.encode()


def test_public_demo_key_only_in_demo_or_test_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(privacy.KEY_ENV, privacy.INSECURE_DEMO_KEY)
    monkeypatch.setenv(privacy.MODE_ENV, "production")
    with pytest.raises(privacy.WeakKeyError, match="public demo key"):
        privacy.pseudonym_key()
    monkeypatch.delenv(privacy.MODE_ENV)
    with pytest.raises(privacy.WeakKeyError, match="public demo key"):
        privacy.pseudonym_key()
    monkeypatch.setenv(privacy.MODE_ENV, "demo")
    assert privacy.pseudonym_key() == privacy.INSECURE_DEMO_KEY.encode()
    monkeypatch.delenv(privacy.KEY_ENV)  # unset: the demo key, in demo mode only
    assert privacy.pseudonym_key() == privacy.INSECURE_DEMO_KEY.encode()
    monkeypatch.setenv(privacy.MODE_ENV, "production")
    with pytest.raises(privacy.MissingKeyError, match="not set"):
        privacy.pseudonym_key()


def test_fingerprint_is_keyed_and_reveals_no_key() -> None:
    fa, fb = privacy.key_fingerprint(KEY_A.encode()), privacy.key_fingerprint(KEY_B.encode())
    assert fa == privacy.key_fingerprint(KEY_A.encode()) and fa != fb and fa.startswith("kf-")
    assert KEY_A not in fa


def _drop(root: Path, accession: str) -> Path:
    drop = root / f"drop-{accession}"
    write_series(drop / "dicom", chest_phantom(16, 16, 12), accession=accession, patient_id="PID-SAME")
    with open(drop / "reports.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(
            [["accession_number", "patient_id", "findings", "impression"], [accession, "PID-SAME", "x", "y"]]
        )
    return drop


def test_changed_key_stops_ingest_of_the_next_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = IngestConfig(workers=1)
    peers = tmp_path / "interim"
    monkeypatch.setenv(privacy.KEY_ENV, KEY_A)
    summary = ingest_drop(_drop(tmp_path, "ACC1"), peers / "b1", cfg, progress=False, key_peers=peers)
    fingerprint = (peers / "b1" / privacy.FINGERPRINT_FILE).read_text().strip()
    assert fingerprint == summary["key_fingerprint"] == privacy.key_fingerprint(KEY_A.encode())
    # Same key: the next batch goes through; re-running the first batch is not a change either.
    ingest_drop(_drop(tmp_path, "ACC2"), peers / "b2", cfg, progress=False, key_peers=peers)
    ingest_drop(_drop(tmp_path, "ACC1"), peers / "b1", cfg, progress=False, key_peers=peers)
    monkeypatch.setenv(privacy.KEY_ENV, KEY_B)
    with pytest.raises(privacy.KeyChangedError, match=r"\['b1', 'b2'\].*Key rotation"):
        ingest_drop(_drop(tmp_path, "ACC3"), peers / "b3", cfg, progress=False, key_peers=peers)
    assert not (peers / "b3").exists()  # stopped before writing anything
    # The public demo key after real batches is named in the error.
    monkeypatch.delenv(privacy.KEY_ENV)
    monkeypatch.setenv(privacy.MODE_ENV, "demo")
    with pytest.raises(privacy.KeyChangedError, match="this run uses the public demo key"):
        ingest_drop(_drop(tmp_path, "ACC3"), peers / "b3", cfg, progress=False, key_peers=peers)


def test_stage_reports_a_changed_key_as_a_failed_stage(tmp_path: Path) -> None:
    peers = tmp_path / "interim"
    env = {"PATH": "/usr/bin:/bin", "EXACT_MODE": "production"}
    cmd = [sys.executable, "-m", "stages.ingest", "--params", str(REPO / "params.yaml"), "--batch"]
    first = subprocess.run(
        [*cmd, "b1", "--in", str(_drop(tmp_path, "ACC1")), "--out", str(peers / "b1"), "--summary",
         str(tmp_path / "b1.json")],
        cwd=REPO, env={**env, privacy.KEY_ENV: KEY_A}, capture_output=True, text=True,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    second = subprocess.run(
        [*cmd, "b2", "--in", str(_drop(tmp_path, "ACC2")), "--out", str(peers / "b2"), "--summary",
         str(tmp_path / "b2.json")],
        cwd=REPO, env={**env, privacy.KEY_ENV: KEY_B}, capture_output=True, text=True,
    )  # fmt: skip
    assert second.returncode == 1
    assert "stage ingest@b2: FAILED" in second.stderr and "['b1']" in second.stderr
    assert KEY_A not in second.stderr and KEY_B not in second.stderr
    assert "Traceback" not in second.stderr
